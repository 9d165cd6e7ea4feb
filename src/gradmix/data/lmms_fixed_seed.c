/* Preloaded into lmms by gradmix (LD_PRELOAD) so that a render is the same in every process.
 *
 * lmms seeds rand() and qrand() from the clock and the process id, and some instruments (DrumSynth, the
 * noise oscillators) draw from them; its mixer threads draw in an order that varies from run to run. Here
 * every seed is 1 and the mixer has one thread, so the draws come in one order.
 *
 * Copyright the gradmix authors. Licensed under the Apache License, Version 2.0.
 */
#define _GNU_SOURCE
#include <dlfcn.h>

void srand(unsigned int seed) {
    void (*real)(unsigned int) = (void (*)(unsigned int))dlsym(RTLD_NEXT, "srand");
    (void)seed;
    real(1u);
}

/* qsrand(uint) */
void _Z6qsrandj(unsigned int seed) {
    void (*real)(unsigned int) = (void (*)(unsigned int))dlsym(RTLD_NEXT, "_Z6qsrandj");
    (void)seed;
    if (real) real(1u);
}

/* QThread::idealThreadCount() */
int _ZN7QThread16idealThreadCountEv(void) { return 1; }
