/*
 * hlc.h: the hybrid logical clock of row versions (spec 8.1): wall-clock
 * milliseconds shifted left 16 bits, plus a counter in the low bits, as one
 * 64-bit value that never goes backwards on a site. The backends keep the
 * clock in their database (their triggers tick it in SQL by the same
 * rule); these are the rules themselves, for the session and for tests.
 */
#ifndef LIPSYNC_HLC_H
#define LIPSYNC_HLC_H

#include <stdint.h>

#define HLC_COUNTER_BITS 16

/* The next clock after |last| at wall time |wall_ms|: later than |last|,
 * and at least the wall time. */
uint64_t hlc_tick(uint64_t last, uint64_t wall_ms);

/* The clock after receiving |seen|: at least |seen|. */
uint64_t hlc_observe(uint64_t last, uint64_t seen);

/* The clock value of wall time |wall_ms| with a zero counter. */
uint64_t hlc_from_ms(uint64_t wall_ms);

/* The wall clock in milliseconds since the Unix epoch. */
uint64_t hlc_wall_ms(void);

/* The horizon of a retention of |retention_ms| at wall time |wall_ms|:
 * the clock of |retention_ms| ago, 0 if that is before the epoch. */
uint64_t hlc_horizon(uint64_t wall_ms, uint64_t retention_ms);

#endif
