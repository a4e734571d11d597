/*
 * crc32c.h -- CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), the
 * checksum of WAL records (the same one etcd, ext4 and iSCSI use).
 *
 * crc32c() picks the SSE4.2 `crc32` instruction when the CPU has it (checked
 * once, at the first call) and a slicing-by-8 table otherwise. Both give the
 * same value; crc32c_sw() is exported so tests can compare them.
 *
 * Chaining: crc32c(crc32c(0, a, n), b, m) == crc32c(0, a||b, n + m).
 */
#ifndef CETCD_STORE_CRC32C_H
#define CETCD_STORE_CRC32C_H

#include <stddef.h>
#include <stdint.h>

uint32_t crc32c(uint32_t crc, const void *buf, size_t len);
uint32_t crc32c_sw(uint32_t crc, const void *buf, size_t len);
/* 1 when crc32c() uses the SSE4.2 instruction. */
int crc32c_hw_available(void);

#endif
