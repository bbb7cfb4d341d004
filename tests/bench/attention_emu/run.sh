#!/bin/sh
# CPU emulation of kernels/cuda/attention.cu (no GPU needed): builds the emulator from the
# production kernels and runs it. The attention kernels' lab when no GPU is at hand; a GPU run
# (tests/gpu/test_cuda_ops.c, tests/bench/attention.cu) remains the verdict.
#   sh tests/bench/attention_emu/run.sh [small|shapes|edges|masks|test_cuda_ops]
#     small          one case (seconds)
#     shapes, edges  every tensor-core configuration, GQA, odd T and D; T = 1, tile edges, windows
#                    of 1 and > T, rows whose keys are all padding (a minute each)
#     masks          every mask combination on both paths (several minutes)
#     test_cuda_ops  tests/gpu/test_cuda_ops.c's attention and attention_backward harnesses on
#                    small cases, then again with the unmasked ones on attention_sm90.cu's kernels
#                    (EMU_SM90=1), then that with deferred copies and drifting warps (`make test`
#                    runs this mode in the CUDA build: about a minute)
#   EMU_DEFERRED=1 (cp.async lands at the wait) and EMU_SHUFFLE=<seed> (warps drift apart between
#   barriers) vary the schedule; see emu.h. Run from the repository root after `make`.
set -e
dir=tests/bench/attention_emu
out=build/attention_emu
mkdir -p $out
CXX="${CXX:-g++} -std=c++20 -O2 -I. -I$out -I$dir -isystem ${CUDA_HOME:-/usr/local/cuda}/include"
python3 $dir/transform.py kernels/cuda/attention.cu $out/attn_emu.inc
python3 $dir/transform.py kernels/cuda/attention_sm90.cu $out/attn_sm90_emu.inc
$CXX -c $dir/emu.cpp -o $out/emu.o
case "${1:-small}" in
test_cuda_ops)
    $CXX -c $dir/fake_cuda.cpp -o $out/fake_cuda.o
    ${CC:-cc} -std=c11 -O2 -fopenmp -D_GNU_SOURCE -I. -isystem ${CUDA_HOME:-/usr/local/cuda}/include \
        -c $dir/test_main.c -o $out/test_main.o
    # the fakes come first and win over the library's CUDA layer
    ${CXX%% *} -o $out/test_cuda_ops_emu $out/test_main.o $out/fake_cuda.o $out/emu.o build/libmedgem.a \
        -Wl,--allow-multiple-definition -L${CUDA_HOME:-/usr/local/cuda}/lib64 -lcublasLt -lcudart_static \
        -lsentencepiece -lz -lgomp -lm -ldl -lrt -lpthread
    $out/test_cuda_ops_emu
    EMU_SM90=1 $out/test_cuda_ops_emu
    EMU_SM90=1 EMU_DEFERRED=1 EMU_SHUFFLE=1 $out/test_cuda_ops_emu ;;
*)
    $CXX $dir/harness.cpp $out/emu.o -o $out/harness
    $out/harness "${1:-small}" ;;
esac
