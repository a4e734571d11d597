#include "msg/mailbox.h"

#include <errno.h>
#include <poll.h>
#include <sched.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

int mailbox_init(mailbox *mb, unsigned capacity) {
  unsigned cap = 2;
  while (cap < capacity) cap <<= 1;
  mb->slots = calloc(cap, sizeof(*mb->slots));
  if (!mb->slots) return -ENOMEM;
  ck_ring_init(&mb->ring, cap);
  mb->capacity = cap;
  mb->sleeping = 0;
  mb->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (mb->efd < 0) {
    int e = errno;
    free(mb->slots);
    return -e;
  }
  pthread_mutex_init(&mb->plock, NULL);
  return 0;
}

void mailbox_destroy(mailbox *mb) {
  if (mb->efd >= 0) close(mb->efd);
  pthread_mutex_destroy(&mb->plock);
  free(mb->slots);
  mb->slots = NULL;
  mb->efd = -1;
}

static void mailbox_kick(mailbox *mb) {
  /* Dekker with mailbox_prepare_sleep: the enqueue (a mutex release) and this
   * seq_cst read of the flag against the consumer's seq_cst store of the
   * flag and its read of the ring: either the consumer sees our message on
   * its re-check, or we see its sleeping flag. A seq_cst read-modify-write
   * stands in for a bare fence (which ThreadSanitizer cannot model). */
  (void)__atomic_fetch_add(&mb->fence_word, 0, __ATOMIC_SEQ_CST);
  if (__atomic_load_n(&mb->sleeping, __ATOMIC_SEQ_CST) &&
      __atomic_exchange_n(&mb->sleeping, 0, __ATOMIC_ACQ_REL)) {
    uint64_t one = 1;
    ssize_t n = write(mb->efd, &one, sizeof(one));
    (void)n; /* EAGAIN means the counter is already nonzero: awake enough */
  }
}

static bool enqueue_locked(mailbox *mb, void *msg) {
  pthread_mutex_lock(&mb->plock);
  bool ok = ck_ring_enqueue_spsc(&mb->ring, mb->slots, msg);
  pthread_mutex_unlock(&mb->plock);
  return ok;
}

bool mailbox_try_push(mailbox *mb, void *msg) {
  if (!enqueue_locked(mb, msg)) return false;
  mailbox_kick(mb);
  return true;
}

void mailbox_wake(mailbox *mb) { mailbox_kick(mb); }

void mailbox_fence(mailbox *mb) { (void)__atomic_fetch_add(&mb->fence_word, 0, __ATOMIC_SEQ_CST); }

/* Half full: wake the consumer even for quiet messages, long before a
 * producer would have to wait. */
static void quiet_kick(mailbox *mb) {
  if (ck_ring_size(&mb->ring) >= mb->capacity / 2) mailbox_kick(mb);
}

bool mailbox_try_push_quiet(mailbox *mb, void *msg) {
  if (!enqueue_locked(mb, msg)) return false;
  quiet_kick(mb);
  return true;
}

/* Enqueues, waiting while the ring is full (and waking the consumer, which
 * must drain it). */
static void push_wait(mailbox *mb, void *msg) {
  unsigned spins = 0;
  while (!enqueue_locked(mb, msg)) {
    /* Full: the consumer is behind. Wake it in case, then back off. */
    mailbox_kick(mb);
    if (++spins < 64) {
      sched_yield();
    } else {
      struct timespec ts = {0, 50 * 1000};
      nanosleep(&ts, NULL);
    }
  }
}

void mailbox_push(mailbox *mb, void *msg) {
  push_wait(mb, msg);
  mailbox_kick(mb);
}

void mailbox_push_quiet(mailbox *mb, void *msg) {
  push_wait(mb, msg);
  quiet_kick(mb);
}

void *mailbox_pop(mailbox *mb) {
  void *msg = NULL;
  if (!ck_ring_dequeue_spsc(&mb->ring, mb->slots, &msg)) return NULL;
  return msg;
}

unsigned mailbox_size(const mailbox *mb) { return ck_ring_size(&mb->ring); }

int mailbox_fd(const mailbox *mb) { return mb->efd; }

bool mailbox_prepare_sleep(mailbox *mb) {
  __atomic_store_n(&mb->sleeping, 1, __ATOMIC_SEQ_CST);
  (void)__atomic_fetch_add(&mb->fence_word, 0, __ATOMIC_SEQ_CST);
  if (ck_ring_size(&mb->ring) > 0) {
    __atomic_store_n(&mb->sleeping, 0, __ATOMIC_RELAXED);
    return false;
  }
  return true;
}

void mailbox_wake_done(mailbox *mb, bool fd_readable) {
  __atomic_store_n(&mb->sleeping, 0, __ATOMIC_RELAXED);
  if (!fd_readable) return;
  uint64_t v;
  ssize_t n = read(mb->efd, &v, sizeof(v)); /* clear the counter */
  (void)n;
}

void mailbox_wait(mailbox *mb, int timeout_ms) {
  if (!mailbox_prepare_sleep(mb)) return;
  struct pollfd p = {.fd = mb->efd, .events = POLLIN};
  int n = poll(&p, 1, timeout_ms);
  mailbox_wake_done(mb, n > 0 && (p.revents & POLLIN));
}
