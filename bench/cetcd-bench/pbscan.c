/*
 * pbscan.c -- see pbscan.h.
 */
#include "bench/cetcd-bench/pbscan.h"

#include <string.h>

static int read_varint(const uint8_t *buf, size_t len, size_t *pos, uint64_t *out) {
  uint64_t v = 0;
  for (int shift = 0; shift < 64 && *pos < len; shift += 7) {
    uint8_t b = buf[(*pos)++];
    v |= (uint64_t)(b & 0x7f) << shift;
    if (!(b & 0x80)) {
      *out = v;
      return 0;
    }
  }
  return -1;
}

int pb_next(const uint8_t *buf, size_t len, size_t *pos, pb_field *f) {
  if (*pos >= len) return 0;
  uint64_t tag;
  if (read_varint(buf, len, pos, &tag) != 0) return -1;
  f->num = (uint32_t)(tag >> 3);
  f->wire = (int)(tag & 7);
  if (f->num == 0 || tag >> 3 > 0x1fffffff) return -1;
  f->p = NULL;
  f->len = 0;
  f->v = 0;
  switch (f->wire) {
  case 0: return read_varint(buf, len, pos, &f->v) == 0 ? 1 : -1;
  case 1:
  case 5: {
    size_t n = f->wire == 1 ? 8 : 4;
    if (len - *pos < n) return -1;
    for (size_t i = 0; i < n; i++) f->v |= (uint64_t)buf[*pos + i] << (8 * i);
    *pos += n;
    return 1;
  }
  case 2: {
    uint64_t n;
    if (read_varint(buf, len, pos, &n) != 0 || n > len - *pos) return -1;
    f->p = buf + *pos;
    f->len = (size_t)n;
    *pos += (size_t)n;
    return 1;
  }
  default: return -1; /* groups (3, 4) are not used by etcd's protos */
  }
}

/* The revision (3) of a ResponseHeader. */
static int64_t header_revision(const uint8_t *buf, size_t len) {
  size_t pos = 0;
  pb_field f;
  int64_t rev = 0;
  while (pb_next(buf, len, &pos, &f) == 1)
    if (f.num == 3 && f.wire == 0) rev = (int64_t)f.v;
  return rev;
}

int pb_watch_resp_scan(const uint8_t *buf, size_t len, pb_watch_resp *r) {
  memset(r, 0, sizeof *r);
  size_t pos = 0;
  pb_field f;
  int rc;
  while ((rc = pb_next(buf, len, &pos, &f)) == 1) {
    if (f.wire == 0) {
      switch (f.num) {
      case 2: r->watch_id = (int64_t)f.v; break;
      case 3: r->created = f.v != 0; break;
      case 4: r->canceled = f.v != 0; break;
      case 5: r->compact_revision = (int64_t)f.v; break;
      default: break;
      }
    } else if (f.wire == 2) {
      if (f.num == 1) r->header_revision = header_revision(f.p, f.len);
      else if (f.num == 6) {
        r->cancel_reason = f.p;
        r->cancel_reason_len = f.len;
      } else if (f.num == 11) r->n_events++;
    }
  }
  return rc == 0 ? 0 : -1;
}

static int kv_scan(const uint8_t *buf, size_t len, pb_watch_event *ev) {
  size_t pos = 0;
  pb_field f;
  int rc;
  while ((rc = pb_next(buf, len, &pos, &f)) == 1) {
    if (f.num == 1 && f.wire == 2) {
      ev->key = f.p;
      ev->key_len = f.len;
    } else if (f.num == 3 && f.wire == 0) {
      ev->mod_revision = (int64_t)f.v;
    } else if (f.num == 5 && f.wire == 2) {
      ev->value_len = f.len;
      ev->value_seq = 0;
      if (f.len >= 8)
        for (int i = 0; i < 8; i++) ev->value_seq |= (uint64_t)f.p[i] << (8 * i);
    }
  }
  return rc == 0 ? 0 : -1;
}

static int event_scan(const uint8_t *buf, size_t len, pb_watch_event *ev) {
  memset(ev, 0, sizeof *ev);
  size_t pos = 0;
  pb_field f;
  int rc;
  while ((rc = pb_next(buf, len, &pos, &f)) == 1) {
    if (f.num == 1 && f.wire == 0) ev->type = (int)f.v;
    else if (f.num == 2 && f.wire == 2 && kv_scan(f.p, f.len, ev) != 0) return -1;
  }
  return rc == 0 ? 0 : -1;
}

int pb_watch_events(const uint8_t *buf, size_t len,
                    void (*cb)(void *ud, const pb_watch_event *ev), void *ud) {
  size_t pos = 0;
  pb_field f;
  int rc, n = 0;
  while ((rc = pb_next(buf, len, &pos, &f)) == 1) {
    if (f.num != 11 || f.wire != 2) continue;
    pb_watch_event ev;
    if (event_scan(f.p, f.len, &ev) != 0) return -1;
    cb(ud, &ev);
    n++;
  }
  return rc == 0 ? n : -1;
}

int pb_status_scan(const uint8_t *buf, size_t len, uint64_t *member_id, uint64_t *leader) {
  size_t pos = 0;
  pb_field f;
  int rc;
  *member_id = *leader = 0;
  while ((rc = pb_next(buf, len, &pos, &f)) == 1) {
    if (f.num == 1 && f.wire == 2) { /* ResponseHeader: member_id is field 2 */
      size_t hp = 0;
      pb_field h;
      int hrc;
      while ((hrc = pb_next(f.p, f.len, &hp, &h)) == 1)
        if (h.num == 2 && h.wire == 0) *member_id = h.v;
      if (hrc != 0) return -1;
    } else if (f.num == 4 && f.wire == 0) {
      *leader = f.v;
    }
  }
  return rc == 0 ? 0 : -1;
}
