/* raft_bench.c — how fast is the Raft core alone?
 *
 * A 3-member cluster in one thread, no I/O: the leader takes proposals in
 * batches, every ready is "persisted" at once (raft_persisted right after
 * advance), messages go straight from one core's ready into the other's
 * raft_step (or, with --codec, through encode + decode). Reports committed
 * entries per second (committed = applied on all three members) and heap
 * allocations per entry, counted by wrapping glibc's malloc family.
 *
 *   raft-bench [--entries N] [--batch B] [--size BYTES] [--codec]
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "raft/raft.h"

/* ---- allocation counting (glibc) ---------------------------------------- */
extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void __libc_free(void *);
static uint64_t n_allocs;

void *malloc(size_t n)
{
    n_allocs++;
    return __libc_malloc(n);
}

void *calloc(size_t a, size_t b)
{
    n_allocs++;
    return __libc_calloc(a, b);
}

void *realloc(void *p, size_t n)
{
    n_allocs++;
    return __libc_realloc(p, n);
}

void free(void *p)
{
    __libc_free(p);
}

/* ---- the cluster --------------------------------------------------------- */
#define N 3
static raft *rs[N + 1];
static uint64_t applied[N + 1];
static int use_codec;
static uint8_t codec_buf[1 << 22];
static raft_entry codec_ents[4096];

static void no_free(void *ctx, uint8_t *data)
{
    (void)ctx;
    (void)data; /* payloads come from one static buffer */
}

static void deliver(const raft_msg *m)
{
    if (m->to < 1 || m->to > N)
        return;
    if (!use_codec) {
        raft_step(rs[m->to], m);
        return;
    }
    size_t w, need;
    raft_msg d;
    if (raft_msg_encode(m, codec_buf, sizeof(codec_buf), &w) != RAFT_OK ||
        raft_msg_decode(codec_buf, w, &d, codec_ents, 4096, &need) != RAFT_OK) {
        fprintf(stderr, "codec failure\n");
        exit(1);
    }
    raft_step(rs[m->to], &d);
}

/* One ready of member i: deliver, apply, advance, persist at once. */
static int pump(int i)
{
    raft *r = rs[i];
    if (!raft_has_ready(r))
        return 0;
    raft_ready rd;
    raft_ready_get(r, &rd);
    for (size_t k = 0; k < rd.n_msgs; k++)
        deliver(&rd.msgs[k]);
    for (size_t k = 0; k < rd.n_msgs_after_persist; k++)
        deliver(&rd.msgs_after_persist[k]);
    if (rd.n_committed)
        applied[i] = rd.committed_entries[rd.n_committed - 1].index;
    uint64_t li = 0, lt = 0;
    if (rd.n_entries) {
        li = rd.entries[rd.n_entries - 1].index;
        lt = rd.entries[rd.n_entries - 1].term;
    }
    raft_ready_advance(r, &rd);
    if (li)
        raft_persisted(r, li, lt);
    return 1;
}

static void run_until_quiet(void)
{
    int busy = 1;
    while (busy) {
        busy = 0;
        for (int i = 1; i <= N; i++)
            busy |= pump(i);
    }
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    uint64_t total = 2000000;
    int batch = 256;
    uint32_t size = 64;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--entries") && i + 1 < argc)
            total = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--batch") && i + 1 < argc)
            batch = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--size") && i + 1 < argc)
            size = (uint32_t)atoi(argv[++i]);
        else if (!strcmp(argv[i], "--codec"))
            use_codec = 1;
        else {
            fprintf(stderr, "usage: %s [--entries N] [--batch B] [--size BYTES] [--codec]\n", argv[0]);
            return 2;
        }
    }
    static uint8_t payload[1 << 16];
    if (size > sizeof(payload))
        size = sizeof(payload);
    memset(payload, 'v', sizeof(payload));
    for (int i = 1; i <= N; i++) {
        raft_config cfg;
        raft_config_default(&cfg, (uint64_t)i, 7);
        cfg.free_data = no_free;
        raft_boot b;
        memset(&b, 0, sizeof(b));
        b.fresh = true;
        b.conf.n_voters = N;
        for (int k = 0; k < N; k++)
            b.conf.voters[k] = (uint64_t)k + 1;
        if (raft_new(&cfg, &b, &rs[i]) != RAFT_OK)
            return 1;
    }
    run_until_quiet();
    raft_campaign(rs[1]);
    run_until_quiet();
    raft_status st;
    raft_status_get(rs[1], &st);
    if (st.role != RAFT_LEADER) {
        fprintf(stderr, "no leader\n");
        return 1;
    }
    /* warm-up: let the pools and rings reach their working size */
    for (int w = 0; w < 200; w++) {
        for (int k = 0; k < batch; k++)
            raft_propose(rs[1], payload, size);
        run_until_quiet();
        raft_compact(rs[1], applied[1], NULL, 0);
        for (int i = 2; i <= N; i++)
            raft_compact(rs[i], applied[i], NULL, 0);
    }
    uint64_t start_index = applied[1];
    uint64_t allocs0 = n_allocs;
    double t0 = now_s();
    uint64_t done = 0;
    while (done < total) {
        for (int k = 0; k < batch; k++)
            if (raft_propose(rs[1], payload, size) != RAFT_OK) {
                fprintf(stderr, "proposal refused\n");
                return 1;
            }
        done += (uint64_t)batch;
        run_until_quiet();
        /* the state machine snapshots now and then, as a server would */
        if ((done / (uint64_t)batch) % 64 == 0)
            for (int i = 1; i <= N; i++)
                raft_compact(rs[i], applied[i], NULL, 0);
    }
    double dt = now_s() - t0;
    uint64_t allocs = n_allocs - allocs0;
    uint64_t committed = applied[1] - start_index;
    for (int i = 2; i <= N; i++)
        if (applied[i] < applied[1]) {
            fprintf(stderr, "member %d behind: %llu < %llu\n", i, (unsigned long long)applied[i],
                    (unsigned long long)applied[1]);
            return 1;
        }
    printf("raft-bench: 3 members, batch %d, %u-byte entries%s\n", batch, size,
           use_codec ? ", messages through the codec" : ", messages in memory");
    printf("  committed entries : %llu in %.3f s\n", (unsigned long long)committed, dt);
    printf("  throughput        : %.0f entries/s (whole cluster on one core)\n",
           (double)committed / dt);
    printf("  allocations       : %llu total, %.4f per entry\n", (unsigned long long)allocs,
           committed ? (double)allocs / (double)committed : 0.0);
    for (int i = 1; i <= N; i++)
        raft_free(rs[i]);
    return 0;
}
