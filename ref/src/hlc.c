/* hlc.c: hybrid logical clock rules (hlc.h). */
#include "hlc.h"

#include <time.h>

#define WALL_MAX (UINT64_MAX >> HLC_COUNTER_BITS)

uint64_t hlc_from_ms(uint64_t wall_ms) {
  if (wall_ms > WALL_MAX)
    wall_ms = WALL_MAX;
  return wall_ms << HLC_COUNTER_BITS;
}

uint64_t hlc_tick(uint64_t last, uint64_t wall_ms) {
  uint64_t wall = hlc_from_ms(wall_ms);
  uint64_t next = last == UINT64_MAX ? last : last + 1;
  return wall > next ? wall : next;
}

uint64_t hlc_observe(uint64_t last, uint64_t seen) {
  return seen > last ? seen : last;
}

uint64_t hlc_wall_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

uint64_t hlc_horizon(uint64_t wall_ms, uint64_t retention_ms) {
  return wall_ms > retention_ms ? hlc_from_ms(wall_ms - retention_ms) : 0;
}
