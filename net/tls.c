/*
 * tls.c -- OpenSSL under the transport. Nonblocking: the handshake runs
 * inside the first reads (SSL_set_accept_state), WANT_READ / WANT_WRITE
 * become EAGAIN for server.c, which retries when epoll says the socket is
 * ready. Writes are partial-write and moving-buffer tolerant because the
 * connection's output buffer may grow (realloc) between a refused write and
 * its retry.
 */
#include "net/tls.h"

#include <errno.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>

static void tls_error(char *err, size_t err_len, const char *what, const char *file) {
  char e[256];
  ERR_error_string_n(ERR_get_error(), e, sizeof(e));
  snprintf(err, err_len, "net: tls: %s%s%s: %s", what, file ? " " : "", file ? file : "", e);
}

/* ALPN: h2 when the client offers it (as Go's servers, etcd's, choose),
 * else http/1.1. Plain HTTP requests work on either (on_http). */
static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned int inlen, void *arg) {
  (void)ssl, (void)arg;
  static const unsigned char prefs[] = "\x02h2\x08http/1.1";
  unsigned char *sel = NULL;
  if (SSL_select_next_proto(&sel, outlen, prefs, sizeof(prefs) - 1, in, inlen) !=
      OPENSSL_NPN_NEGOTIATED) {
    return SSL_TLSEXT_ERR_NOACK;
  }
  *out = sel;
  return SSL_TLSEXT_ERR_OK;
}

void *net_tls_ctx_new(const net_tls_config *cfg, char *err, size_t err_len) {
  SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
  if (!ctx) {
    tls_error(err, err_len, "context", NULL);
    return NULL;
  }
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                            SSL_MODE_RELEASE_BUFFERS);
  SSL_CTX_set_alpn_select_cb(ctx, alpn_select, NULL);
  if (SSL_CTX_use_certificate_chain_file(ctx, cfg->cert_file) != 1) {
    tls_error(err, err_len, "certificate", cfg->cert_file);
    goto fail;
  }
  if (SSL_CTX_use_PrivateKey_file(ctx, cfg->key_file, SSL_FILETYPE_PEM) != 1 ||
      SSL_CTX_check_private_key(ctx) != 1) {
    tls_error(err, err_len, "private key", cfg->key_file);
    goto fail;
  }
  if (cfg->client_cert_auth) {
    if (!cfg->trusted_ca_file || SSL_CTX_load_verify_locations(ctx, cfg->trusted_ca_file, NULL) != 1) {
      tls_error(err, err_len, "trusted CA", cfg->trusted_ca_file);
      goto fail;
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
  }
  return ctx;
fail:
  SSL_CTX_free(ctx);
  return NULL;
}

void net_tls_ctx_free(void *ctx) { SSL_CTX_free(ctx); }

/* Maps an OpenSSL result to read(2)/write(2) semantics. */
static ssize_t tls_result(net_conn *c, int r) {
  switch (SSL_get_error(c->ssl, r)) {
  case SSL_ERROR_WANT_READ:
  case SSL_ERROR_WANT_WRITE:
    errno = EAGAIN;
    return -1;
  case SSL_ERROR_ZERO_RETURN:
    return 0;
  case SSL_ERROR_SYSCALL:
    if (errno == 0) return 0; /* EOF without close_notify */
    return -1;
  default:
    ERR_clear_error();
    errno = EPROTO;
    return -1;
  }
}

/* Fills as much of buf as OpenSSL can without blocking (one SSL_read
 * returns at most one record). */
static ssize_t tls_read(net_conn *c, void *buf, size_t len) {
  size_t got = 0;
  while (got < len) {
    int want = len - got > (size_t)INT32_MAX ? INT32_MAX : (int)(len - got);
    errno = 0;
    int r = SSL_read(c->ssl, (uint8_t *)buf + got, want);
    if (r <= 0) {
      if (got > 0) { /* report the rest (EAGAIN, EOF, error) on the next call */
        ERR_clear_error();
        return (ssize_t)got;
      }
      return tls_result(c, r);
    }
    got += (size_t)r;
  }
  return (ssize_t)got;
}

static ssize_t tls_write(net_conn *c, const void *buf, size_t len) {
  int want = len > (size_t)INT32_MAX ? INT32_MAX : (int)len;
  errno = 0;
  int r = SSL_write(c->ssl, buf, want);
  return r > 0 ? (ssize_t)r : tls_result(c, r);
}

static const net_io_ops net_io_tls = {tls_read, tls_write};

int net_tls_conn_init(net_conn *c, void *ctx) {
  c->ssl = SSL_new(ctx);
  if (!c->ssl || SSL_set_fd(c->ssl, c->fd) != 1) {
    net_tls_conn_free(c);
    return -1;
  }
  SSL_set_accept_state(c->ssl);
  c->io = &net_io_tls;
  return 0;
}

void net_tls_conn_free(net_conn *c) {
  if (!c->ssl) return;
  SSL_free(c->ssl);
  c->ssl = NULL;
  ERR_clear_error();
}

size_t net_tls_pending(const net_conn *c) { return c->ssl ? (size_t)SSL_pending(c->ssl) : 0; }
