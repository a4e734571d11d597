/*
 * mailbox.h -- an actor's inbox: a bounded lock-free ring of pointers plus an
 * eventfd to sleep on.
 *
 * Concurrency contract: many producers, ONE consumer (the owning actor).
 * The ring is ck_ring's SPSC ring; producers take `plock` around their
 * enqueue. Why not ck_ring's MPSC enqueue: it reserves a slot, then spins
 * until every earlier producer has committed its own. On our two-core
 * machines a producer preempted between the two leaves the others spinning
 * for its whole time slice: measured with 4 producers and a 64-slot ring,
 * throughput fell to ~500 messages/s. A mutex sleeps instead of spinning,
 * costs ~20 ns uncontended, and most mailboxes have one or two producers.
 * The consumer side stays lock-free.
 * Every message is a pointer; ownership of what it points to passes to the
 * consumer on a successful push (see msg/msgs.h for who frees what).
 *
 * Wake-up protocol (no lost wake-ups, no eventfd write per message): the
 * consumer announces it is about to sleep (mailbox_prepare_sleep), re-checks
 * the ring, then blocks on the eventfd (directly or through epoll). A
 * producer pushes, then writes the eventfd only if the consumer announced
 * sleep. Both sides put a full fence between their store and their load.
 *
 * Quiet pushes (mailbox_*_quiet) enqueue without waking a sleeping consumer,
 * for messages nothing waits on: a later ordinary push (or mailbox_wake) to
 * the same mailbox brings them along, in order. Each wake-up is a context
 * switch, and on two shared cores often a wait for a CPU: measured with one
 * client, the put round trip crossed 13 thread switches where 8 carry the
 * request (see actors/raft_actor.c, actors/watch_actor.c). So that quiet
 * messages cannot fill the ring unseen, a quiet push to a ring that is half
 * full wakes the consumer anyway.
 *
 * Bounded: a push to a full mailbox fails (mailbox_try_push) or waits with
 * backoff (mailbox_push); nothing grows without limit.
 */
#ifndef CETCD_MSG_MAILBOX_H
#define CETCD_MSG_MAILBOX_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <ck_ring.h>

typedef struct mailbox {
  ck_ring_t ring;
  ck_ring_buffer_t *slots;
  pthread_mutex_t plock;  /* serializes producers (see above) */
  unsigned capacity;      /* ring slots (power of two); holds capacity-1 */
  int efd;                /* eventfd, nonblocking */
  int sleeping;           /* consumer is (about to be) blocked: producers must wake it */
  int fence_word;         /* target of seq_cst no-op RMWs used as full fences */
} mailbox;

/* capacity is rounded up to a power of two. Returns 0 or -errno. */
int mailbox_init(mailbox *mb, unsigned capacity);
void mailbox_destroy(mailbox *mb);

/* Producers (any thread). */
bool mailbox_try_push(mailbox *mb, void *msg);
/* Waits (yield, then short sleeps) while full. Use where dropping is wrong
 * and the consumer is known to be draining. */
void mailbox_push(mailbox *mb, void *msg);
/* The same without waking the consumer (see "Quiet pushes" above). */
bool mailbox_try_push_quiet(mailbox *mb, void *msg);
void mailbox_push_quiet(mailbox *mb, void *msg);
/* Wakes the consumer if it sleeps: after quiet pushes it must see now. */
void mailbox_wake(mailbox *mb);
/* A full fence that pairs with the consumer's mailbox_prepare_sleep: after
 * a quiet push and this, either the consumer sees the message before it
 * sleeps, or the producer sees whatever the consumer stored before it
 * announced sleep (e.g. "I have work that needs these messages"). */
void mailbox_fence(mailbox *mb);

/* Consumer only. */
void *mailbox_pop(mailbox *mb);           /* NULL when empty */
unsigned mailbox_size(const mailbox *mb); /* approximate */
int mailbox_fd(const mailbox *mb);        /* for epoll: readable = maybe messages */
/* Announce intent to sleep; returns false (and cancels) if messages are
 * already waiting. After it returns true, block on the fd (poll/epoll/read),
 * then call mailbox_wake_done(), saying whether the wait found the fd
 * readable: only then is the eventfd read (cleared). A caller that clears
 * it elsewhere (the net loop, on its epoll event) passes false. Reading
 * it unconditionally cost a failed read(2) per wake-up for each mailbox
 * that did not fire (two per put on the raft thread, one on the loop). */
bool mailbox_prepare_sleep(mailbox *mb);
void mailbox_wake_done(mailbox *mb, bool fd_readable);
/* prepare_sleep + poll on the fd for up to timeout_ms (-1 = forever) + done. */
void mailbox_wait(mailbox *mb, int timeout_ms);

#endif
