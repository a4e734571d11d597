/*
 * errors.h -- the one table of errors a client can see.
 *
 * Every error cetcd returns to a client is a row here: its name, the gRPC
 * status code etcd 3.4 returns for it, and etcd's exact message. Code that
 * fails returns a negative `cetcd_err` (-CETCD_E_...); the net layer turns it
 * into `grpc-status` / `grpc-message` with cetcd_err_code()/cetcd_err_msg().
 * The strings exist nowhere else in the tree.
 */
#ifndef CETCD_MSG_ERRORS_H
#define CETCD_MSG_ERRORS_H

/* gRPC status codes (grpc/doc/statuscodes.md). */
enum grpc_code {
  GRPC_OK = 0,
  GRPC_CANCELLED = 1,
  GRPC_UNKNOWN = 2,
  GRPC_INVALID_ARGUMENT = 3,
  GRPC_DEADLINE_EXCEEDED = 4,
  GRPC_NOT_FOUND = 5,
  GRPC_ALREADY_EXISTS = 6,
  GRPC_PERMISSION_DENIED = 7,
  GRPC_RESOURCE_EXHAUSTED = 8,
  GRPC_FAILED_PRECONDITION = 9,
  GRPC_ABORTED = 10,
  GRPC_OUT_OF_RANGE = 11,
  GRPC_UNIMPLEMENTED = 12,
  GRPC_INTERNAL = 13,
  GRPC_UNAVAILABLE = 14,
  GRPC_DATA_LOSS = 15,
  GRPC_UNAUTHENTICATED = 16,
};

/*    name                 gRPC code                  etcd 3.4's message */
#define CETCD_ERRORS(X)                                                                                     \
  X(EMPTY_KEY,             GRPC_INVALID_ARGUMENT,     "etcdserver: key is not provided")                    \
  X(KEY_NOT_FOUND,         GRPC_INVALID_ARGUMENT,     "etcdserver: key not found")                          \
  X(VALUE_PROVIDED,        GRPC_INVALID_ARGUMENT,     "etcdserver: value is provided")                      \
  X(LEASE_PROVIDED,        GRPC_INVALID_ARGUMENT,     "etcdserver: lease is provided")                      \
  X(TOO_MANY_OPS,          GRPC_INVALID_ARGUMENT,     "etcdserver: too many operations in txn request")     \
  X(DUPLICATE_KEY,         GRPC_INVALID_ARGUMENT,     "etcdserver: duplicate key given in txn request")     \
  X(COMPACTED,             GRPC_OUT_OF_RANGE,         "etcdserver: mvcc: required revision has been compacted") \
  X(FUTURE_REV,            GRPC_OUT_OF_RANGE,         "etcdserver: mvcc: required revision is a future revision") \
  X(NO_SPACE,              GRPC_RESOURCE_EXHAUSTED,   "etcdserver: mvcc: database space exceeded")          \
  X(LEASE_NOT_FOUND,       GRPC_NOT_FOUND,            "etcdserver: requested lease not found")              \
  X(LEASE_EXIST,           GRPC_FAILED_PRECONDITION,  "etcdserver: lease already exists")                   \
  X(LEASE_TTL_TOO_LARGE,   GRPC_OUT_OF_RANGE,         "etcdserver: too large lease TTL")                    \
  X(WATCH_CANCELED,        GRPC_CANCELLED,            "etcdserver: watch canceled")                         \
  X(MEMBER_NOT_FOUND,      GRPC_NOT_FOUND,            "etcdserver: member not found")                       \
  X(REQUEST_TOO_LARGE,     GRPC_INVALID_ARGUMENT,     "etcdserver: request is too large")                   \
  X(TOO_MANY_REQUESTS,     GRPC_RESOURCE_EXHAUSTED,   "etcdserver: too many requests")                      \
  X(PERMISSION_DENIED,     GRPC_PERMISSION_DENIED,    "etcdserver: permission denied")                      \
  X(NO_LEADER,             GRPC_UNAVAILABLE,          "etcdserver: no leader")                              \
  X(NOT_LEADER,            GRPC_FAILED_PRECONDITION,  "etcdserver: not leader")                             \
  X(LEADER_CHANGED,        GRPC_UNAVAILABLE,          "etcdserver: leader changed")                         \
  X(STOPPED,               GRPC_UNAVAILABLE,          "etcdserver: server stopped")                         \
  X(TIMEOUT,               GRPC_UNAVAILABLE,          "etcdserver: request timed out")                      \
  X(CORRUPT,               GRPC_DATA_LOSS,            "etcdserver: corrupt cluster")                        \
  /* not etcdserver errors, but statuses cetcd sends with a fixed text */                                  \
  X(INTERNAL,              GRPC_INTERNAL,             "cetcd: internal error")                              \
  X(MALFORMED,             GRPC_INTERNAL,             "grpc: error unmarshalling request: unexpected EOF") \
  X(NOMEM,                 GRPC_RESOURCE_EXHAUSTED,   "cetcd: out of memory")

typedef enum cetcd_err {
  CETCD_OK = 0,
#define CETCD_ERR_ENUM_(name, code, msg) CETCD_E_##name,
  CETCD_ERRORS(CETCD_ERR_ENUM_)
#undef CETCD_ERR_ENUM_
  CETCD_E_COUNT_
} cetcd_err;

/* `e` may be given positive or negative; unknown values map to INTERNAL. */
int cetcd_err_code(int e);
const char *cetcd_err_msg(int e);

#endif
