// The fiber scheduler of emu.h.
#include "emu.h"

emu_dim3 blockIdx, blockDim, gridDim;
int emu_cur;
std::vector<EmuFiber> emu_fibers;
alignas(128) unsigned char emu_smem[256 * 1024];
size_t emu_smem_bytes;
int emu_deferred_cp = -1;  // set from EMU_DEFERRED at the first launch
EmuWarp emu_warps[32];
static ucontext_t sched_ctx;
static unsigned block_gen, block_count;
static unsigned long progress;
static const std::function<void()> *cur_fn;

void emu_yield() { swapcontext(&emu_fibers[emu_cur].ctx, &sched_ctx); }
void emu_warp_sync() {
    EmuWarp &w = emu_warps[emu_warp()];
    const unsigned gen = w.gen;
    progress++;
    unsigned lanes = blockDim.x - 32 * emu_warp();
    if (lanes > 32) lanes = 32;
    if (++w.count == lanes) { w.count = 0; w.gen++; return; }
    while (w.gen == gen) emu_yield();
}
void emu_block_sync() {
    const unsigned gen = block_gen;
    progress++;
    if (++block_count == blockDim.x) { block_count = 0; block_gen++; return; }
    while (block_gen == gen) emu_yield();
}
static void trampoline() {
    (*cur_fn)();
    emu_fibers[emu_cur].done = true;
    swapcontext(&emu_fibers[emu_cur].ctx, &sched_ctx);
}
void emu_launch(emu_dim3 grid, unsigned threads, size_t smem, const std::function<void()> &fn) {
    if (smem > sizeof emu_smem) { fprintf(stderr, "EMU: smem %zu too large\n", smem); abort(); }
    if (emu_deferred_cp < 0) emu_deferred_cp = getenv("EMU_DEFERRED") != NULL;
    gridDim = grid;
    blockDim = {threads, 1, 1};
    cur_fn = &fn;
    emu_fibers.resize(threads);
    for (unsigned bz = 0; bz < grid.z; bz++)
        for (unsigned by = 0; by < grid.y; by++)
            for (unsigned bx = 0; bx < grid.x; bx++) {
                blockIdx = {bx, by, bz};
                emu_smem_bytes = smem;
                memset(emu_smem, 0xFF, sizeof emu_smem);  // bf16 NaN everywhere: unwritten reads show
                memset(emu_warps, 0, sizeof emu_warps);
                block_gen = block_count = 0;
                for (unsigned t = 0; t < threads; t++) {
                    EmuFiber &f = emu_fibers[t];
                    f.tid = {t, 0, 0};
                    f.done = false;
                    f.pending.clear();
                    f.stack.resize(512 * 1024);
                    getcontext(&f.ctx);
                    f.ctx.uc_stack.ss_sp = f.stack.data();
                    f.ctx.uc_stack.ss_size = f.stack.size();
                    f.ctx.uc_link = NULL;
                    makecontext(&f.ctx, trampoline, 0);
                }
                for (;;) {
                    bool all_done = true;
                    const unsigned long before = progress;
                    // EMU_SHUFFLE: each round runs a random half of the warps (whole warps, so that a
                    // warp can get many collectives ahead of another): exposes missing barriers.
                    static uint64_t rs = getenv("EMU_SHUFFLE") ? strtoull(getenv("EMU_SHUFFLE"), 0, 10) : 0;
                    unsigned warp_mask = ~0u;
                    if (rs) { rs = rs * 6364136223846793005ull + 1442695040888963407ull; warp_mask = (unsigned)(rs >> 33); }
                    bool any_live_chosen = false;
                    for (unsigned t = 0; t < threads; t++) any_live_chosen |= !emu_fibers[t].done && ((warp_mask >> (t / 32)) & 1);
                    if (!any_live_chosen) warp_mask = ~0u;
                    for (unsigned t = 0; t < threads; t++) {
                        if (emu_fibers[t].done) continue;
                        all_done = false;
                        if (!((warp_mask >> (t / 32)) & 1)) continue;
                        emu_cur = (int)t;
                        swapcontext(&sched_ctx, &emu_fibers[t].ctx);
                    }
                    if (all_done) break;
                    bool any_running = false;
                    for (unsigned t = 0; t < threads; t++) any_running |= !emu_fibers[t].done;
                    if (any_running && progress == before && warp_mask == ~0u) {
                        // every live fiber is waiting and none arrived anywhere: a barrier some thread never reaches
                        int waiting = 0; for (unsigned t = 0; t < threads; t++) waiting += !emu_fibers[t].done;
                        fprintf(stderr, "EMU: deadlock in block (%u,%u,%u): %d threads waiting\n", bx, by, bz, waiting);
                        abort();
                    }
                }
            }
}
