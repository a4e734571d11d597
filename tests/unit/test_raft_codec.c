/* test_raft_codec.c — the peer wire codec of raft_msg and the conf-change
 * payload: round trips, and malformed input refused (never read past). */
#include <CUnit/Basic.h>
#include <stdlib.h>
#include <string.h>

#include "raft/raft.h"

static uint8_t *enc(const raft_msg *m, size_t *len)
{
    *len = raft_msg_encoded_size(m);
    uint8_t *b = malloc(*len);
    size_t w = 0;
    CU_ASSERT_EQUAL(raft_msg_encode(m, b, *len, &w), RAFT_OK);
    CU_ASSERT_EQUAL(w, *len);
    return b;
}

static void test_app_round_trip(void)
{
    uint8_t d1[] = "hello", d2[] = "x";
    raft_entry ents[3] = {
        { .term = 5, .index = 11, .type = RAFT_ENTRY_NORMAL, .len = 5, .data = d1 },
        { .term = 5, .index = 12, .type = RAFT_ENTRY_CONF_CHANGE, .len = 1, .data = d2 },
        { .term = 6, .index = 13, .type = RAFT_ENTRY_NORMAL, .len = 0, .data = NULL },
    };
    raft_msg m = { .type = RAFT_MSG_APP, .from = 1, .to = 2, .term = 6, .log_term = 4,
                   .index = 10, .commit = 9, .ctx = 77, .n_entries = 3, .entries = ents };
    size_t len;
    uint8_t *b = enc(&m, &len);
    raft_msg o;
    raft_entry out[3];
    size_t need;
    /* too small an entry array: told how many are needed */
    CU_ASSERT_EQUAL(raft_msg_decode(b, len, &o, out, 2, &need), RAFT_ERR_NOMEM);
    CU_ASSERT_EQUAL(need, 3);
    CU_ASSERT_EQUAL_FATAL(raft_msg_decode(b, len, &o, out, 3, &need), RAFT_OK);
    CU_ASSERT_EQUAL(o.type, RAFT_MSG_APP);
    CU_ASSERT_EQUAL(o.from, 1);
    CU_ASSERT_EQUAL(o.to, 2);
    CU_ASSERT_EQUAL(o.term, 6);
    CU_ASSERT_EQUAL(o.log_term, 4);
    CU_ASSERT_EQUAL(o.index, 10);
    CU_ASSERT_EQUAL(o.commit, 9);
    CU_ASSERT_EQUAL(o.ctx, 77);
    CU_ASSERT_EQUAL_FATAL(o.n_entries, 3);
    CU_ASSERT_EQUAL(o.entries[0].len, 5);
    CU_ASSERT_EQUAL(memcmp(o.entries[0].data, "hello", 5), 0);
    CU_ASSERT_EQUAL(o.entries[1].type, RAFT_ENTRY_CONF_CHANGE);
    CU_ASSERT_EQUAL(o.entries[1].data[0], 'x');
    CU_ASSERT_EQUAL(o.entries[2].len, 0);
    CU_ASSERT_PTR_NULL(o.entries[2].data);
    CU_ASSERT_EQUAL(o.entries[2].term, 6);
    /* every truncation is refused */
    for (size_t cut = 0; cut < len; cut++)
        CU_ASSERT_EQUAL(raft_msg_decode(b, cut, &o, out, 3, &need), RAFT_ERR_INVALID);
    /* a trailing byte is refused */
    uint8_t *b2 = malloc(len + 1);
    memcpy(b2, b, len);
    b2[len] = 0;
    CU_ASSERT_EQUAL(raft_msg_decode(b2, len + 1, &o, out, 3, &need), RAFT_ERR_INVALID);
    free(b2);
    free(b);
}

static void test_snap_round_trip(void)
{
    uint8_t img[100];
    for (int i = 0; i < 100; i++)
        img[i] = (uint8_t)(i * 7);
    raft_msg m = { .type = RAFT_MSG_SNAP, .from = 3, .to = 1, .term = 9, .snap_last = true,
                   .snap_offset = 400, .snap_total = 500, .snap_len = 100, .snap_data = img };
    m.snap.index = 1234;
    m.snap.term = 8;
    m.snap.conf.n_voters = 3;
    m.snap.conf.voters[0] = 1;
    m.snap.conf.voters[1] = 2;
    m.snap.conf.voters[2] = 3;
    m.snap.conf.n_learners = 1;
    m.snap.conf.learners[0] = 9;
    size_t len;
    uint8_t *b = enc(&m, &len);
    raft_msg o;
    size_t need;
    CU_ASSERT_EQUAL_FATAL(raft_msg_decode(b, len, &o, NULL, 0, &need), RAFT_OK);
    CU_ASSERT_TRUE(o.snap_last);
    CU_ASSERT_FALSE(o.reject);
    CU_ASSERT_EQUAL(o.snap.index, 1234);
    CU_ASSERT_EQUAL(o.snap.term, 8);
    CU_ASSERT_EQUAL(o.snap.conf.n_voters, 3);
    CU_ASSERT_EQUAL(o.snap.conf.voters[2], 3);
    CU_ASSERT_EQUAL(o.snap.conf.n_learners, 1);
    CU_ASSERT_EQUAL(o.snap.conf.learners[0], 9);
    CU_ASSERT_EQUAL(o.snap_offset, 400);
    CU_ASSERT_EQUAL(o.snap_total, 500);
    CU_ASSERT_EQUAL(o.snap_len, 100);
    CU_ASSERT_EQUAL(memcmp(o.snap_data, img, 100), 0);
    for (size_t cut = 0; cut < len; cut++)
        CU_ASSERT_EQUAL(raft_msg_decode(b, cut, &o, NULL, 0, &need), RAFT_ERR_INVALID);
    free(b);
}

/* Offsets in the fixed header: version 0, type 1, flags 2, from 3.. ,
 * n_entries at 75, the first entry's len at 79 + 17. */
static void test_malformed(void)
{
    uint8_t d[] = "abc";
    raft_entry e = { .term = 1, .index = 2, .len = 3, .data = d };
    raft_msg m = { .type = RAFT_MSG_APP, .from = 1, .to = 2, .term = 1, .index = 1,
                   .n_entries = 1, .entries = &e };
    size_t len;
    uint8_t *b = enc(&m, &len);
    raft_msg o;
    raft_entry out[4];
    size_t need;
    uint8_t *x = malloc(len);
#define MUTATE(off, val)                                                              \
    do {                                                                              \
        memcpy(x, b, len);                                                            \
        x[off] = (uint8_t)(val);                                                      \
        CU_ASSERT_EQUAL(raft_msg_decode(x, len, &o, out, 4, &need), RAFT_ERR_INVALID); \
    } while (0)
    MUTATE(0, 2);                  /* unknown version */
    MUTATE(1, 0);                  /* type 0 */
    MUTATE(1, RAFT_MSG_TYPE_MAX);  /* unknown type */
    MUTATE(2, 4);                  /* unknown flag */
    MUTATE(75, 2);                 /* claims two entries */
    MUTATE(78, 0xff);              /* claims ~4 billion entries */
    MUTATE(79 + 16, 7);            /* unknown entry type */
    MUTATE(79 + 17, 4);            /* entry longer than the buffer */
    MUTATE(79 + 20, 0x80);         /* entry length 2^31 + 3 */
#undef MUTATE
    /* a snapshot header claiming too many members */
    raft_msg s = { .type = RAFT_MSG_SNAP_RESP, .from = 1, .to = 2 };
    size_t sl;
    uint8_t *sb = enc(&s, &sl);
    sb[79 + 16] = RAFT_MAX_MEMBERS + 1; /* n_voters */
    CU_ASSERT_EQUAL(raft_msg_decode(sb, sl, &o, out, 4, &need), RAFT_ERR_INVALID);
    CU_ASSERT_EQUAL(raft_msg_decode(NULL, 0, &o, out, 4, &need), RAFT_ERR_INVALID);
    /* encode refuses a buffer that is too small */
    size_t w;
    CU_ASSERT_EQUAL(raft_msg_encode(&m, x, len - 1, &w), RAFT_ERR_INVALID);
    free(sb);
    free(x);
    free(b);
}

static void test_conf_change_payload(void)
{
    uint8_t buf[9 + 4] = { RAFT_CC_ADD_LEARNER, 0x34, 0x12, 0, 0, 0, 0, 0, 0, 'u', 'r', 'l', 's' };
    raft_conf_change cc;
    CU_ASSERT_EQUAL_FATAL(raft_conf_change_decode(buf, sizeof(buf), &cc), RAFT_OK);
    CU_ASSERT_EQUAL(cc.type, RAFT_CC_ADD_LEARNER);
    CU_ASSERT_EQUAL(cc.node_id, 0x1234);
    CU_ASSERT_EQUAL(cc.ctx_len, 4);
    CU_ASSERT_EQUAL(memcmp(cc.ctx, "urls", 4), 0);
    CU_ASSERT_EQUAL(raft_conf_change_decode(buf, 8, &cc), RAFT_ERR_INVALID);
    buf[0] = 9;
    CU_ASSERT_EQUAL(raft_conf_change_decode(buf, sizeof(buf), &cc), RAFT_ERR_INVALID);
    uint8_t zero[9] = { 0 };
    CU_ASSERT_EQUAL(raft_conf_change_decode(zero, 9, &cc), RAFT_ERR_INVALID); /* node 0 */
}

/* Decoding random bytes never crashes and never succeeds with nonsense
 * lengths (a cheap in-tree stand-in for the libFuzzer target). */
static void test_random_bytes(void)
{
    uint64_t s = 12345;
    uint8_t buf[512];
    raft_entry out[8];
    raft_msg o;
    size_t need;
    for (int it = 0; it < 20000; it++) {
        size_t len = (size_t)(s % sizeof(buf));
        for (size_t i = 0; i < len; i++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            buf[i] = (uint8_t)(s >> 56);
        }
        if (len > 3) {
            buf[0] = 1;
            buf[1] = (uint8_t)(1 + s % (RAFT_MSG_TYPE_MAX - 1));
            buf[2] = 0;
        }
        if (raft_msg_decode(buf, len, &o, out, 8, &need) == RAFT_OK) {
            /* whatever decoded must re-encode to the same bytes */
            size_t l2 = raft_msg_encoded_size(&o), w;
            CU_ASSERT_EQUAL(l2, len);
            uint8_t *re = malloc(l2);
            CU_ASSERT_EQUAL(raft_msg_encode(&o, re, l2, &w), RAFT_OK);
            CU_ASSERT_EQUAL(memcmp(re, buf, len), 0);
            free(re);
        }
    }
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("raft_codec", NULL, NULL);
    CU_add_test(s, "MsgApp round trip, truncations refused", test_app_round_trip);
    CU_add_test(s, "snapshot chunk round trip", test_snap_round_trip);
    CU_add_test(s, "malformed headers and lengths refused", test_malformed);
    CU_add_test(s, "conf-change payload", test_conf_change_payload);
    CU_add_test(s, "random bytes", test_random_bytes);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failed = CU_get_number_of_failures();
    CU_cleanup_registry();
    return failed ? 1 : 0;
}
