#include "msg/errors.h"

static const struct {
  int code;
  const char *msg;
} err_table[CETCD_E_COUNT_] = {
  [CETCD_OK] = {GRPC_OK, ""},
#define CETCD_ERR_ROW_(name, code, msg) [CETCD_E_##name] = {code, msg},
  CETCD_ERRORS(CETCD_ERR_ROW_)
#undef CETCD_ERR_ROW_
};

static int err_index(int e) {
  if (e < 0) e = -e;
  if (e >= CETCD_E_COUNT_) e = CETCD_E_INTERNAL;
  return e;
}

int cetcd_err_code(int e) { return err_table[err_index(e)].code; }

const char *cetcd_err_msg(int e) { return err_table[err_index(e)].msg; }
