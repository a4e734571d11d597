/*
 * test_client_frame.c -- the client library's gRPC framing (cli/client/
 * grpc_frame.c, pure), and its agreement with the server's framing
 * (net/grpc_frame.c): what one side writes, the other reads.
 *
 * The client library is its own static library; its pure framing file is
 * compiled into this test directly.
 */
#include <CUnit/Basic.h>
#include <string.h>

#include "cli/client/grpc_frame.c"
#include "net/grpc_frame.h"

static void test_prefix_and_next(void) {
  uint8_t buf[64];
  cc_grpc_put_prefix(buf, 3);
  memcpy(buf + 5, "abc", 3);
  cc_grpc_put_prefix(buf + 8, 0); /* an empty message follows */
  const uint8_t *msg;
  size_t n, used;
  for (size_t cut = 0; cut < 8; cut++) CU_ASSERT_EQUAL(cc_grpc_next_msg(buf, cut, &msg, &n, &used), 0);
  CU_ASSERT_EQUAL(cc_grpc_next_msg(buf, 13, &msg, &n, &used), 1);
  CU_ASSERT_EQUAL(n, 3);
  CU_ASSERT_EQUAL(used, 8);
  CU_ASSERT_EQUAL(memcmp(msg, "abc", 3), 0);
  CU_ASSERT_EQUAL(cc_grpc_next_msg(buf + used, 5, &msg, &n, &used), 1);
  CU_ASSERT_EQUAL(n, 0);
  CU_ASSERT_EQUAL(used, 5);
}

static void test_refusals(void) {
  uint8_t buf[5] = {1, 0, 0, 0, 0}; /* compressed: we never asked for it */
  const uint8_t *msg;
  size_t n, used;
  CU_ASSERT_EQUAL(cc_grpc_next_msg(buf, 5, &msg, &n, &used), -1);
  cc_grpc_put_prefix(buf, CC_GRPC_MSG_MAX + 1);
  CU_ASSERT_EQUAL(cc_grpc_next_msg(buf, 5, &msg, &n, &used), -1);
}

static void test_percent_decode(void) {
  char out[64];
  const char *in = "etcdserver: key%20is%20not%20provided%";
  size_t n = cc_grpc_percent_decode((const uint8_t *)in, strlen(in), out, sizeof(out));
  CU_ASSERT_STRING_EQUAL(out, "etcdserver: key is not provided%"); /* a dangling '%' stays */
  CU_ASSERT_EQUAL(n, strlen(out));
  cc_grpc_percent_decode((const uint8_t *)"%zz%4", 5, out, sizeof(out));
  CU_ASSERT_STRING_EQUAL(out, "%zz%4");
  cc_grpc_percent_decode((const uint8_t *)"abcdef", 6, out, 4); /* truncates, terminates */
  CU_ASSERT_STRING_EQUAL(out, "abc");
}

/* The server's percent-encoding of every byte value decodes back exactly. */
static void test_server_encode_client_decode(void) {
  char in[256], enc[1024], dec[256];
  for (int i = 1; i < 256; i++) in[i - 1] = (char)i;
  in[255] = 0;
  size_t n = grpc_percent_encode(in, enc, sizeof(enc));
  CU_ASSERT_TRUE_FATAL(n < sizeof(enc));
  cc_grpc_percent_decode((const uint8_t *)enc, strlen(enc), dec, sizeof(dec));
  CU_ASSERT_EQUAL(memcmp(in, dec, 256), 0);
}

/* The server's prefix is read by the client, and the client's by the server. */
static void test_prefix_both_ways(void) {
  uint8_t s[5], c[5];
  grpc_frame_put_prefix(s, 0x01020304);
  cc_grpc_put_prefix(c, 0x01020304);
  CU_ASSERT_EQUAL(memcmp(s, c, 5), 0);
}

int main(void) {
  if (CU_initialize_registry() != CUE_SUCCESS) return 1;
  CU_pSuite s = CU_add_suite("client_frame", NULL, NULL);
  CU_add_test(s, "prefix and next message", test_prefix_and_next);
  CU_add_test(s, "compressed and oversized refused", test_refusals);
  CU_add_test(s, "percent decode", test_percent_decode);
  CU_add_test(s, "server encode, client decode", test_server_encode_client_decode);
  CU_add_test(s, "prefix both ways", test_prefix_both_ways);
  CU_basic_set_mode(CU_BRM_VERBOSE);
  CU_basic_run_tests();
  unsigned failed = CU_get_number_of_failures();
  CU_cleanup_registry();
  return failed ? 1 : 0;
}
