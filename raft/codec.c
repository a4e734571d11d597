/* codec.c — raft_msg on the wire between members.
 *
 * Layout (all integers little-endian, fixed width):
 *
 *   off  size  field
 *   0    1     version (1)
 *   1    1     type (raft_msg_type)
 *   2    1     flags: bit0 reject, bit1 snap_last; other bits must be 0
 *   3    72    from, to, term, log_term, index, commit, reject_hint,
 *              hint_term, ctx (9 x u64)
 *   75   4     n_entries (u32)
 *         ...  n_entries x { term u64, index u64, type u8, len u32, data }
 *   then, only for MSG_SNAP and MSG_SNAP_RESP:
 *              snap index u64, snap term u64, n_voters u32, n_learners u32,
 *              voters/learners u64 each, snap_offset u64, snap_total u64,
 *              snap_len u32, data
 *
 * The decoder checks every length against what is left before reading and
 * refuses trailing bytes, unknown types and flags, and member counts over
 * RAFT_MAX_MEMBERS. */
#include "raft/raft_int.h"

#define HDR_BYTES 79u
#define ENT_HDR_BYTES 21u

static bool has_snap(uint8_t type)
{
    return type == RAFT_MSG_SNAP || type == RAFT_MSG_SNAP_RESP;
}

size_t raft_msg_encoded_size(const raft_msg *m)
{
    size_t n = HDR_BYTES;
    for (size_t i = 0; i < m->n_entries; i++)
        n += ENT_HDR_BYTES + m->entries[i].len;
    if (has_snap(m->type))
        n += 24 + 8 * ((size_t)m->snap.conf.n_voters + m->snap.conf.n_learners) + 20 + m->snap_len;
    return n;
}

static uint8_t *put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
    return p + 8;
}

static uint8_t *put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
    return p + 4;
}

int raft_msg_encode(const raft_msg *m, uint8_t *buf, size_t cap, size_t *written)
{
    size_t need = raft_msg_encoded_size(m);
    if (need > cap || m->n_entries > UINT32_MAX || m->snap.conf.n_voters > RAFT_MAX_MEMBERS ||
        m->snap.conf.n_learners > RAFT_MAX_MEMBERS)
        return RAFT_ERR_INVALID;
    uint8_t *p = buf;
    *p++ = 1;
    *p++ = m->type;
    *p++ = (uint8_t)((m->reject ? 1 : 0) | (m->snap_last ? 2 : 0));
    const uint64_t hdr[9] = { m->from, m->to, m->term, m->log_term, m->index,
                              m->commit, m->reject_hint, m->hint_term, m->ctx };
    for (int i = 0; i < 9; i++)
        p = put64(p, hdr[i]);
    p = put32(p, (uint32_t)m->n_entries);
    for (size_t i = 0; i < m->n_entries; i++) {
        const raft_entry *e = &m->entries[i];
        p = put64(p, e->term);
        p = put64(p, e->index);
        *p++ = e->type;
        p = put32(p, e->len);
        if (e->len)
            memcpy(p, e->data, e->len);
        p += e->len;
    }
    if (has_snap(m->type)) {
        const raft_conf_state *c = &m->snap.conf;
        p = put64(p, m->snap.index);
        p = put64(p, m->snap.term);
        p = put32(p, c->n_voters);
        p = put32(p, c->n_learners);
        for (uint32_t i = 0; i < c->n_voters; i++)
            p = put64(p, c->voters[i]);
        for (uint32_t i = 0; i < c->n_learners; i++)
            p = put64(p, c->learners[i]);
        p = put64(p, m->snap_offset);
        p = put64(p, m->snap_total);
        p = put32(p, m->snap_len);
        if (m->snap_len)
            memcpy(p, m->snap_data, m->snap_len);
        p += m->snap_len;
    }
    *written = (size_t)(p - buf);
    return RAFT_OK;
}

typedef struct rd {
    const uint8_t *p;
    size_t left;
    bool bad;
} rd;

static uint64_t get64(rd *d)
{
    if (d->left < 8) {
        d->bad = true;
        return 0;
    }
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)d->p[i] << (8 * i);
    d->p += 8;
    d->left -= 8;
    return v;
}

static uint32_t get32(rd *d)
{
    if (d->left < 4) {
        d->bad = true;
        return 0;
    }
    uint32_t v = 0;
    for (int i = 0; i < 4; i++)
        v |= (uint32_t)d->p[i] << (8 * i);
    d->p += 4;
    d->left -= 4;
    return v;
}

static const uint8_t *get_bytes(rd *d, size_t n)
{
    if (d->left < n) {
        d->bad = true;
        return NULL;
    }
    const uint8_t *p = d->p;
    d->p += n;
    d->left -= n;
    return p;
}

static int decode_snap(rd *d, raft_msg *m)
{
    raft_conf_state *c = &m->snap.conf;
    m->snap.index = get64(d);
    m->snap.term = get64(d);
    c->n_voters = get32(d);
    c->n_learners = get32(d);
    if (d->bad || c->n_voters > RAFT_MAX_MEMBERS || c->n_learners > RAFT_MAX_MEMBERS ||
        c->n_voters + c->n_learners > RAFT_MAX_MEMBERS)
        return RAFT_ERR_INVALID;
    for (uint32_t i = 0; i < c->n_voters; i++)
        c->voters[i] = get64(d);
    for (uint32_t i = 0; i < c->n_learners; i++)
        c->learners[i] = get64(d);
    m->snap_offset = get64(d);
    m->snap_total = get64(d);
    m->snap_len = get32(d);
    m->snap_data = m->snap_len ? get_bytes(d, m->snap_len) : NULL;
    if (d->bad || m->snap_offset > m->snap_total || m->snap_len > m->snap_total - m->snap_offset)
        return RAFT_ERR_INVALID;
    return RAFT_OK;
}

int raft_msg_decode(const uint8_t *buf, size_t len, raft_msg *m, raft_entry *ents_buf,
                    size_t ents_cap, size_t *n_needed)
{
    memset(m, 0, sizeof(*m));
    if (n_needed)
        *n_needed = 0;
    if (!buf || len < HDR_BYTES || buf[0] != 1 || buf[1] == 0 || buf[1] >= RAFT_MSG_TYPE_MAX ||
        (buf[2] & ~3u))
        return RAFT_ERR_INVALID;
    rd d = { buf + 3, len - 3, false };
    m->type = buf[1];
    m->reject = buf[2] & 1;
    m->snap_last = (buf[2] & 2) != 0;
    uint64_t *hdr[9] = { &m->from, &m->to, &m->term, &m->log_term, &m->index,
                         &m->commit, &m->reject_hint, &m->hint_term, &m->ctx };
    for (int i = 0; i < 9; i++)
        *hdr[i] = get64(&d);
    uint32_t n = get32(&d);
    if (d.bad || (uint64_t)n * ENT_HDR_BYTES > d.left)
        return RAFT_ERR_INVALID;
    if (n_needed)
        *n_needed = n;
    if (n > ents_cap || (n && !ents_buf))
        return RAFT_ERR_NOMEM;
    for (uint32_t i = 0; i < n; i++) {
        raft_entry *e = &ents_buf[i];
        e->term = get64(&d);
        e->index = get64(&d);
        const uint8_t *t = get_bytes(&d, 1);
        e->type = t ? *t : 0;
        e->len = get32(&d);
        e->data = (uint8_t *)(uintptr_t)(e->len ? get_bytes(&d, e->len) : NULL);
        e->owner = NULL;
        if (d.bad || e->type > RAFT_ENTRY_CONF_CHANGE)
            return RAFT_ERR_INVALID;
    }
    m->n_entries = n;
    m->entries = n ? ents_buf : NULL;
    if (has_snap(m->type) && decode_snap(&d, m) != RAFT_OK)
        return RAFT_ERR_INVALID;
    if (d.bad || d.left)
        return RAFT_ERR_INVALID;
    return RAFT_OK;
}
