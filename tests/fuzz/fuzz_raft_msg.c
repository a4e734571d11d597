/* fuzz_raft_msg.c — libFuzzer target for raft_msg_decode (built with
 * -DCETCD_FUZZ=ON). Whatever decodes must re-encode to the same bytes, and
 * stepping it into a core must not crash. By hand:
 *   clang -g -fsanitize=fuzzer,address,undefined -I. tests/fuzz/fuzz_raft_msg.c raft/\*.c */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "raft/raft.h"

static raft *core(void)
{
    static raft *r;
    if (!r) {
        raft_config cfg;
        raft_config_default(&cfg, 2, 1);
        raft_boot b;
        memset(&b, 0, sizeof(b));
        b.fresh = true;
        b.conf.n_voters = 3;
        b.conf.voters[0] = 1;
        b.conf.voters[1] = 2;
        b.conf.voters[2] = 3;
        if (raft_new(&cfg, &b, &r) != RAFT_OK)
            abort();
    }
    return r;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    raft_msg m;
    raft_entry ents[64];
    size_t need;
    if (raft_msg_decode(data, size, &m, ents, 64, &need) != RAFT_OK)
        return 0;
    size_t len = raft_msg_encoded_size(&m), w;
    if (len != size)
        abort();
    uint8_t *re = malloc(len ? len : 1);
    if (raft_msg_encode(&m, re, len, &w) != RAFT_OK || memcmp(re, data, size) != 0)
        abort();
    free(re);
    raft *r = core();
    m.to = 2; /* addressed to the core under test, or it is refused at once */
    raft_step(r, &m);
    while (raft_has_ready(r)) {
        raft_ready rd;
        raft_ready_get(r, &rd);
        uint64_t li = 0, lt = 0;
        if (rd.n_entries) {
            li = rd.entries[rd.n_entries - 1].index;
            lt = rd.entries[rd.n_entries - 1].term;
        }
        raft_ready_advance(r, &rd);
        if (li)
            raft_persisted(r, li, lt);
    }
    return 0;
}
