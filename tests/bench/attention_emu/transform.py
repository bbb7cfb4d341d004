"""Turns kernels/cuda/attention.cu into host C++ for the emulator (emu.h): drops the CUDA includes,
the inline-asm helpers (emu.h defines them), and every top-level function that launches, fails or
takes the context (launchers and entries); kernels and device helpers stay as they are.

usage: python3 transform.py kernels/cuda/attention.cu build/attention_emu/attn_emu.inc
       python3 transform.py kernels/cuda/attention_sm90.cu build/attention_emu/attn_sm90_emu.inc"""
import re
import sys

ASM_HELPERS = ['smem_u32', 'cp_async16', 'cp_async16_zfill', 'cp_async_commit', 'cp_async_wait_all', 'ldmatrix_x4',
               'ldmatrix_x4_trans', 'mma_bf16_16816', 'exp2_fast',
               # attention_sm90.cu's (emu.h emulates them)
               'wgmma_ss_n32', 'wgmma_ss_n40', 'wgmma_ss_n64', 'wgmma_rs_n64', 'wgmma_rs_n80', 'wgmma_rs_n128',
               'wgmma_ss', 'wgmma_rs', 'wgmma_fence', 'wgmma_commit', 'wgmma_wait', 'fence_proxy_async',
               'keep_regs', 'bulk_reduce_add', 'bulk_wait_read', 'bulk_wait_done']


def top_level_items(text):
    """(kind, start, end) of each top-level statement or braced item, comments and strings skipped."""
    items, depth, last, k, n = [], 0, 0, 0, len(text)
    while k < n:
        if text.startswith('//', k):
            e = text.find('\n', k)
            k = e if e >= 0 else n
            continue
        if text.startswith('/*', k):
            k = text.find('*/', k) + 2
            continue
        c = text[k]
        if c in '"\'':
            e = k + 1
            while text[e] != c:
                e += 2 if text[e] == '\\' else 1
            k = e + 1
            continue
        if c == '{':
            depth += 1
        elif c == '}':
            depth -= 1
            if depth == 0:
                e = k + 1
                m = re.match(r'\s*;', text[e:])  # struct / enum
                if m:
                    e += m.end()
                items.append(('block', last, e))
                last = k = e
                continue
        elif c == ';' and depth == 0:
            items.append(('stmt', last, k + 1))
            last = k + 1
        k += 1
    items.append(('tail', last, n))
    return items


def main():
    src = open(sys.argv[1]).read()
    src = src.replace('#include "kernels/cuda/cuda_common.cuh"', '')
    src = src.replace('#include "kernels/cuda/attention_sm90.cuh"', '')
    src = re.sub(r'extern "C" \{\s*#include "kernels/cuda/ops.h"\s*\}', '', src)
    src = re.sub(r'extern __shared__ __align__\(\d+\) unsigned char smem_raw\[\];', 'unsigned char *smem_raw = emu_smem;', src)
    if '#if defined(__CUDA_ARCH_FEAT_SM90_ALL)' in src:  # attention_sm90.cu: as compiled for sm_90a
        src = re.sub(r'#else\n\s*__trap\(\);[^\n]*\n#endif\n', '', src)
        src = src.replace('#if defined(__CUDA_ARCH_FEAT_SM90_ALL)\n', '').replace('#endif\n', '')
    src = src.replace('extern __shared__ float smem[];', 'float *smem = (float *)emu_smem;')
    out = []
    for kind, a, b in top_level_items(src):
        t = src[a:b]
        if kind == 'block':
            head = t[:t.find('{')]
            if ('mg_status' in head or 'mg_cuda_ctx' in head or 'extern "C"' in head or
                    any(w in t for w in ('<<<', 'MG_CUDA_CHECK', 'mg_fail', 'MG_TRY'))):
                out.append('\n// [emu: launcher or entry dropped]\n')
                continue
            if any(re.search(r'\b%s\s*\(' % h, head) for h in ASM_HELPERS):
                out.append('\n// [emu: asm helper dropped]\n')
                continue
        out.append(t)
    open(sys.argv[2], 'w').write(''.join(out))


main()
