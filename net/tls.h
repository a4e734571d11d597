/*
 * tls.h -- TLS under the HTTP code (internal): an OpenSSL server context
 * built from net_tls_config, and the net_io_ops that run a connection's
 * bytes through it. ALPN picks "h2" when offered, else "http/1.1"; either
 * way the decrypted bytes go through the same preface detection as
 * cleartext, so gRPC and HTTP/1.1 share the TLS port as they share h2c's.
 */
#ifndef CETCD_NET_TLS_H
#define CETCD_NET_TLS_H

#include <stddef.h>

#include "net/net_internal.h"

/* Returns an SSL_CTX* (as void*) or NULL with a message in err. */
void *net_tls_ctx_new(const net_tls_config *cfg, char *err, size_t err_len);
void net_tls_ctx_free(void *ctx);
/* Puts connection c (fd set) under TLS as the server side. 0 or -1. */
int net_tls_conn_init(net_conn *c, void *ctx);
void net_tls_conn_free(net_conn *c);
/* Decrypted bytes buffered inside OpenSSL, not yet read (epoll cannot see
 * them). */
size_t net_tls_pending(const net_conn *c);

#endif
