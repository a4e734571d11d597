/*
 * grpc_frame.h -- gRPC length-prefixed message framing, a pure decoder.
 *
 * On the wire each message is: 1 byte compressed-flag, 4 bytes big-endian
 * length, then `length` bytes. Messages may be split across HTTP/2 DATA
 * frames at any byte, and one DATA frame may carry several messages. The
 * decoder is fed the DATA payloads in order and yields whole messages.
 *
 * Zero-copy when possible: a message lying wholly inside the fed chunk is
 * returned as a pointer into that chunk; only a message split across chunks
 * is assembled in the decoder's own buffer (grown to the largest message seen,
 * never beyond max_msg_bytes, and kept for reuse).
 *
 * Errors follow grpc-go (rpc_util.go recvMsg/checkRecvPayload) so the caller
 * can answer with grpc-go's exact status; after an error the decoder is stuck
 * in that error until reset.
 */
#ifndef CETCD_NET_GRPC_FRAME_H
#define CETCD_NET_GRPC_FRAME_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
  GRPC_DEC_NEED_MORE = 0,   /* all input consumed, no complete message */
  GRPC_DEC_MSG = 1,         /* one message in *msg / *msg_len */
  GRPC_DEC_ERR_TOO_LARGE,   /* RESOURCE_EXHAUSTED "grpc: received message larger than max (%u vs. %zu)" */
  GRPC_DEC_ERR_COMPRESSED,  /* flag 1 (we accept no grpc-encoding): INTERNAL
                             * "grpc: compressed flag set with identity or empty encoding" */
  GRPC_DEC_ERR_FORMAT,      /* flag not 0/1: INTERNAL "grpc: received unexpected payload format %d" */
  GRPC_DEC_ERR_NOMEM
} grpc_dec_status;

typedef struct grpc_frame_dec {
  size_t max_msg_bytes;   /* limit on one message's length */
  uint8_t hdr[5];         /* prefix being assembled */
  uint8_t hdr_have;       /* bytes of hdr received */
  uint8_t flag;           /* compressed flag of the current message */
  uint32_t need;          /* current message's length (valid once hdr_have == 5) */
  uint8_t *buf;           /* assembly buffer for split messages (malloc'd) */
  size_t cap;             /* bytes allocated at buf */
  size_t have;            /* bytes of the current message in buf */
  grpc_dec_status err;    /* sticky error, or GRPC_DEC_NEED_MORE when healthy */
  uint32_t err_len;       /* the offending length / flag for error messages */
  uint64_t n_msgs;        /* messages decoded so far */
} grpc_frame_dec;

void grpc_frame_dec_init(grpc_frame_dec *d, size_t max_msg_bytes);
/* Forget any partial message and error; keeps the buffer. */
void grpc_frame_dec_reset(grpc_frame_dec *d);
void grpc_frame_dec_free(grpc_frame_dec *d);
/* True when bytes of an unfinished message (or prefix) are buffered. */
int grpc_frame_dec_partial(const grpc_frame_dec *d);

/* Consumes input from (data, len) up to the end of the first message that
 * completes, storing the count in *consumed. Call again with the rest of
 * the input while it returns GRPC_DEC_MSG. The message pointer is valid until
 * the next call on this decoder and while `data` is. */
grpc_dec_status grpc_frame_dec_feed(grpc_frame_dec *d, const uint8_t *data, size_t len,
                                    size_t *consumed, const uint8_t **msg, size_t *msg_len);

/* Writes the 5-byte prefix for an uncompressed message of `len` bytes. */
void grpc_frame_put_prefix(uint8_t out[5], uint32_t len);

/* Percent-encodes a grpc-message value per the gRPC HTTP/2 spec (bytes
 * outside 0x20..0x7E and '%' become %XX). Writes at most out_cap-1 chars and
 * a NUL; returns the length written. */
size_t grpc_percent_encode(const char *in, char *out, size_t out_cap);

#endif
