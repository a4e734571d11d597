/*
 * tls.c -- TLS for https:// endpoints: OpenSSL on the connection's
 * non-blocking socket, ALPN "h2" (grpc-go refuses TLS connections that do
 * not negotiate it), server certificate and host name verified unless the
 * caller asks not to, optional client certificate.
 *
 * loop.c keeps a TLS connection in its `connecting` state until the
 * handshake is done, so no HTTP/2 byte is sent before; afterwards it reads
 * and writes through cc_tls_read / cc_tls_write, which follow read(2) and
 * write(2) conventions (-1 with errno EAGAIN when the socket would block).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <signal.h>
#include <string.h>
#include <sys/epoll.h>

#include "cli/client/client_int.h"

static void tls_err(char *err, size_t err_len, const char *what) {
  unsigned long e = ERR_get_error();
  char buf[256] = "";
  if (e) ERR_error_string_n(e, buf, sizeof buf);
  snprintf(err, err_len, "%s%s%s", what, e ? ": " : "", buf);
  ERR_clear_error();
}

static SSL_CTX *ctx_new(const cc_tls_opts *o, char *err, size_t err_len) {
  SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
  if (!ctx) {
    tls_err(err, err_len, "tls: cannot create a context");
    return NULL;
  }
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  int ok = o->ca_file ? SSL_CTX_load_verify_locations(ctx, o->ca_file, NULL)
                      : SSL_CTX_set_default_verify_paths(ctx);
  if (!ok) {
    tls_err(err, err_len, o->ca_file ? o->ca_file : "tls: default CA paths");
    goto fail;
  }
  SSL_CTX_set_verify(ctx, o->insecure_skip_verify ? SSL_VERIFY_NONE : SSL_VERIFY_PEER, NULL);
  if (o->cert_file || o->key_file) {
    if (!o->cert_file || !o->key_file) {
      snprintf(err, err_len, "tls: a client certificate needs both cert and key files");
      goto fail;
    }
    if (SSL_CTX_use_certificate_chain_file(ctx, o->cert_file) != 1) {
      tls_err(err, err_len, o->cert_file);
      goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, o->key_file, SSL_FILETYPE_PEM) != 1) {
      tls_err(err, err_len, o->key_file);
      goto fail;
    }
  }
  return ctx;
fail:
  SSL_CTX_free(ctx);
  return NULL;
}

/* Names the peer we expect: an IP address is checked against the
 * certificate's IP SANs, a host name against its DNS names (and sent as
 * SNI). */
static int ssl_set_peer(SSL *ssl, const char *name) {
  unsigned char addr[16];
  int is_ip = inet_pton(AF_INET, name, addr) == 1 || inet_pton(AF_INET6, name, addr) == 1;
  X509_VERIFY_PARAM *param = SSL_get0_param(ssl);
  if (is_ip) return X509_VERIFY_PARAM_set1_ip_asc(param, name) == 1 ? 0 : -1;
  if (SSL_set_tlsext_host_name(ssl, name) != 1) return -1;
  return SSL_set1_host(ssl, name) == 1 ? 0 : -1;
}

int cc_tls_setup(cc_conn *conn, const cc_tls_opts *o, const char *host, char *err,
                 size_t err_len) {
  static const unsigned char alpn[] = {2, 'h', '2'};
  /* OpenSSL writes with write(2), not send(MSG_NOSIGNAL): a peer that went
   * away would raise SIGPIPE. Ignore it unless the program handles it. */
  struct sigaction sa;
  if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL) signal(SIGPIPE, SIG_IGN);
  SSL_CTX *ctx = ctx_new(o, err, err_len);
  if (!ctx) return -1;
  SSL *ssl = SSL_new(ctx);
  SSL_CTX_free(ctx); /* the SSL holds its own reference */
  if (!ssl) {
    tls_err(err, err_len, "tls: cannot create a session");
    return -1;
  }
  const char *name = o->server_name ? o->server_name : host;
  if (SSL_set_alpn_protos(ssl, alpn, sizeof alpn) != 0 ||
      (!o->insecure_skip_verify && ssl_set_peer(ssl, name) != 0) ||
      SSL_set_fd(ssl, conn->fd) != 1) {
    tls_err(err, err_len, "tls: cannot configure the session");
    SSL_free(ssl);
    return -1;
  }
  SSL_set_connect_state(ssl);
  conn->ssl = ssl;
  return 0;
}

int cc_tls_handshake(cc_conn *conn, uint32_t *events, char *err, size_t err_len) {
  SSL *ssl = conn->ssl;
  int rv = SSL_do_handshake(ssl);
  if (rv == 1) {
    const unsigned char *proto = NULL;
    unsigned int len = 0;
    SSL_get0_alpn_selected(ssl, &proto, &len);
    if (len != 2 || memcmp(proto, "h2", 2) != 0) {
      snprintf(err, err_len, "tls: the server did not negotiate ALPN h2");
      return -1;
    }
    return 1;
  }
  switch (SSL_get_error(ssl, rv)) {
  case SSL_ERROR_WANT_READ: *events = EPOLLIN; return 0;
  case SSL_ERROR_WANT_WRITE: *events = EPOLLIN | EPOLLOUT; return 0;
  default: break;
  }
  long vr = SSL_get_verify_result(ssl);
  if (vr != X509_V_OK) {
    snprintf(err, err_len, "tls: certificate verify failed: %s",
             X509_verify_cert_error_string(vr));
    ERR_clear_error();
  } else {
    tls_err(err, err_len, "tls: handshake failed");
  }
  return -1;
}

/* Maps an SSL_read/SSL_write failure to read(2)/write(2) conventions; a
 * TLS-level failure is EPROTO with OpenSSL's reason in conn->tls_err. */
static ssize_t io_result(cc_conn *conn, int rv) {
  switch (SSL_get_error(conn->ssl, rv)) {
  case SSL_ERROR_WANT_READ:
  case SSL_ERROR_WANT_WRITE: errno = EAGAIN; return -1;
  case SSL_ERROR_ZERO_RETURN: return 0;
  case SSL_ERROR_SYSCALL:
    if (errno == 0) errno = ECONNRESET;
    ERR_clear_error();
    return -1;
  default: tls_err(conn->tls_err, sizeof conn->tls_err, "tls"); errno = EPROTO; return -1;
  }
}

ssize_t cc_tls_read(cc_conn *conn, void *buf, size_t len) {
  int n = SSL_read(conn->ssl, buf, len > INT32_MAX ? INT32_MAX : (int)len);
  return n > 0 ? n : io_result(conn, n);
}

ssize_t cc_tls_write(cc_conn *conn, const void *buf, size_t len) {
  int n = SSL_write(conn->ssl, buf, len > INT32_MAX ? INT32_MAX : (int)len);
  return n > 0 ? n : io_result(conn, n);
}

int cc_tls_has_pending(cc_conn *conn) { return SSL_has_pending(conn->ssl); }

void cc_tls_free(cc_conn *conn) {
  if (!conn->ssl) return;
  SSL_free(conn->ssl);
  conn->ssl = NULL;
}
