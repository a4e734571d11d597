/*
 * test_mailbox.c -- the actor inbox: bounded MPSC ring + eventfd wake-ups.
 */
#include <CUnit/Basic.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "msg/arena.h"
#include "msg/errors.h"
#include "msg/mailbox.h"

static void test_fifo_and_bound(void) {
  mailbox mb;
  CU_ASSERT_EQUAL_FATAL(mailbox_init(&mb, 8), 0);
  /* capacity 8 slots holds 7 messages: one slot tells full from empty */
  uintptr_t i;
  for (i = 1; i <= 7; i++) CU_ASSERT_TRUE(mailbox_try_push(&mb, (void *)i));
  CU_ASSERT_FALSE(mailbox_try_push(&mb, (void *)i));
  CU_ASSERT_EQUAL(mailbox_size(&mb), 7);
  for (i = 1; i <= 7; i++) CU_ASSERT_EQUAL((uintptr_t)mailbox_pop(&mb), i);
  CU_ASSERT_PTR_NULL(mailbox_pop(&mb));
  mailbox_destroy(&mb);
}

static void test_capacity_rounds_up(void) {
  mailbox mb;
  CU_ASSERT_EQUAL_FATAL(mailbox_init(&mb, 100), 0);
  CU_ASSERT_EQUAL(mb.capacity, 128);
  mailbox_destroy(&mb);
}

static void test_prepare_sleep_sees_pending(void) {
  mailbox mb;
  CU_ASSERT_EQUAL_FATAL(mailbox_init(&mb, 8), 0);
  CU_ASSERT_TRUE(mailbox_prepare_sleep(&mb));
  mailbox_wake_done(&mb, false);
  CU_ASSERT_TRUE(mailbox_try_push(&mb, (void *)1));
  /* a message is waiting: the consumer must not go to sleep */
  CU_ASSERT_FALSE(mailbox_prepare_sleep(&mb));
  CU_ASSERT_EQUAL((uintptr_t)mailbox_pop(&mb), 1);
  mailbox_destroy(&mb);
}

static bool fd_readable(mailbox *mb) {
  struct pollfd p = {.fd = mailbox_fd(mb), .events = POLLIN};
  return poll(&p, 1, 0) == 1 && (p.revents & POLLIN);
}

/* A quiet push leaves a sleeping consumer asleep until the ring is half
 * full or someone wakes it; the messages stay in order either way. */
static void test_quiet_push(void) {
  mailbox mb;
  CU_ASSERT_EQUAL_FATAL(mailbox_init(&mb, 8), 0);
  CU_ASSERT_TRUE(mailbox_prepare_sleep(&mb));
  CU_ASSERT_TRUE(mailbox_try_push_quiet(&mb, (void *)1));
  mailbox_push_quiet(&mb, (void *)2);
  CU_ASSERT_FALSE(fd_readable(&mb));
  mailbox_wake(&mb);
  CU_ASSERT_TRUE(fd_readable(&mb));
  mailbox_wake_done(&mb, true);
  CU_ASSERT_FALSE(fd_readable(&mb));
  CU_ASSERT_TRUE(mailbox_prepare_sleep(&mb) == false); /* two are waiting */
  CU_ASSERT_EQUAL((uintptr_t)mailbox_pop(&mb), 1);
  CU_ASSERT_EQUAL((uintptr_t)mailbox_pop(&mb), 2);
  /* half full (4 of 8 slots): a quiet push wakes a sleeper after all */
  CU_ASSERT_TRUE(mailbox_prepare_sleep(&mb));
  for (uintptr_t i = 1; i <= 3; i++) CU_ASSERT_TRUE(mailbox_try_push_quiet(&mb, (void *)i));
  CU_ASSERT_FALSE(fd_readable(&mb));
  CU_ASSERT_TRUE(mailbox_try_push_quiet(&mb, (void *)4));
  CU_ASSERT_TRUE(fd_readable(&mb));
  mailbox_wake_done(&mb, true);
  for (uintptr_t i = 1; i <= 4; i++) CU_ASSERT_EQUAL((uintptr_t)mailbox_pop(&mb), i);
  CU_ASSERT_PTR_NULL(mailbox_pop(&mb));
  mailbox_destroy(&mb);
}

#define PRODUCERS 4
#define PER_PRODUCER 200000

typedef struct prod_arg {
  mailbox *mb;
  uintptr_t id;
} prod_arg;

static void *producer(void *arg) {
  prod_arg *p = arg;
  for (uintptr_t seq = 1; seq <= PER_PRODUCER; seq++)
    mailbox_push(p->mb, (void *)(p->id << 32 | seq)); /* waits while full */
  return NULL;
}

/* Many producers, one consumer that sleeps whenever the ring is empty, a
 * ring much smaller than the traffic: every message arrives exactly once,
 * each producer's in order, and the consumer never sleeps through one (the
 * test would hang: ctest's timeout turns that into a failure). */
static void test_mpsc_stress_with_sleeps(void) {
  mailbox mb;
  CU_ASSERT_EQUAL_FATAL(mailbox_init(&mb, 64), 0);
  pthread_t th[PRODUCERS];
  prod_arg args[PRODUCERS];
  for (uintptr_t i = 0; i < PRODUCERS; i++) {
    args[i] = (prod_arg){&mb, i};
    pthread_create(&th[i], NULL, producer, &args[i]);
  }
  uintptr_t next[PRODUCERS];
  for (int i = 0; i < PRODUCERS; i++) next[i] = 1;
  size_t got = 0, out_of_order = 0, sleeps = 0;
  while (got < (size_t)PRODUCERS * PER_PRODUCER) {
    void *m = mailbox_pop(&mb);
    if (!m) {
      mailbox_wait(&mb, -1);
      sleeps++;
      continue;
    }
    uintptr_t v = (uintptr_t)m, id = v >> 32, seq = v & 0xffffffffu;
    if (id >= PRODUCERS || seq != next[id]) out_of_order++;
    else next[id]++;
    got++;
  }
  for (int i = 0; i < PRODUCERS; i++) pthread_join(th[i], NULL);
  CU_ASSERT_EQUAL(out_of_order, 0);
  CU_ASSERT_PTR_NULL(mailbox_pop(&mb));
  for (int i = 0; i < PRODUCERS; i++) CU_ASSERT_EQUAL(next[i], PER_PRODUCER + 1);
  (void)sleeps;
  mailbox_destroy(&mb);
}

static void test_arena(void) {
  arena a;
  arena_init(&a, 256);
  char *p = arena_alloc(&a, 10);
  CU_ASSERT_PTR_NOT_NULL_FATAL(p);
  CU_ASSERT_EQUAL((uintptr_t)p % 16, 0);
  memset(p, 'x', 10);
  char *big = arena_alloc(&a, 10000); /* larger than a chunk */
  CU_ASSERT_PTR_NOT_NULL_FATAL(big);
  memset(big, 'y', 10000);
  CU_ASSERT_EQUAL(p[9], 'x');
  char *z = arena_calloc(&a, 100);
  for (int i = 0; i < 100; i++) CU_ASSERT_EQUAL(z[i], 0);
  arena_reset(&a);
  CU_ASSERT_EQUAL(a.used_bytes, 0);
  CU_ASSERT_PTR_NOT_NULL(arena_memdup(&a, "abc", 3));
  arena_free(&a);
}

static void test_error_table(void) {
  CU_ASSERT_EQUAL(cetcd_err_code(-CETCD_E_COMPACTED), 11);
  CU_ASSERT_STRING_EQUAL(cetcd_err_msg(-CETCD_E_COMPACTED), "etcdserver: mvcc: required revision has been compacted");
  CU_ASSERT_EQUAL(cetcd_err_code(-CETCD_E_EMPTY_KEY), 3);
  CU_ASSERT_STRING_EQUAL(cetcd_err_msg(CETCD_E_EMPTY_KEY), "etcdserver: key is not provided");
  CU_ASSERT_EQUAL(cetcd_err_code(-9999), cetcd_err_code(-CETCD_E_INTERNAL)); /* unknown -> internal */
  CU_ASSERT_EQUAL(cetcd_err_code(0), 0);
}

int main(void) {
  if (CU_initialize_registry() != CUE_SUCCESS) return 1;
  CU_pSuite s = CU_add_suite("mailbox", NULL, NULL);
  CU_add_test(s, "fifo and bound", test_fifo_and_bound);
  CU_add_test(s, "capacity rounds up", test_capacity_rounds_up);
  CU_add_test(s, "prepare_sleep sees pending", test_prepare_sleep_sees_pending);
  CU_add_test(s, "quiet push", test_quiet_push);
  CU_add_test(s, "mpsc stress with sleeps", test_mpsc_stress_with_sleeps);
  CU_pSuite s2 = CU_add_suite("msg", NULL, NULL);
  CU_add_test(s2, "arena", test_arena);
  CU_add_test(s2, "error table", test_error_table);
  CU_basic_set_mode(CU_BRM_VERBOSE);
  CU_basic_run_tests();
  unsigned failed = CU_get_number_of_failures();
  CU_cleanup_registry();
  return failed ? 1 : 0;
}
