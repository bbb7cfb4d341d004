/* Wall-clock seconds for timings and ETAs (CLOCK_MONOTONIC: never jumps with the system clock). */
#ifndef MG_CLOCK_H
#define MG_CLOCK_H

double mg_now_s(void);

#endif
