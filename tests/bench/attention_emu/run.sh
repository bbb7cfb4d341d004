#!/bin/sh
# CPU emulation of kernels/cuda/attention.cu and lora.cu's tensor-core kernels (no GPU needed):
# builds the emulator from the production kernels and runs it. The kernels' lab when no GPU is at
# hand; a GPU run (tests/gpu/test_cuda_ops.c, test_cuda_backward.c, tests/bench/attention.cu)
# remains the verdict.
#   sh tests/bench/attention_emu/run.sh [small|shapes|edges|masks|test_cuda_ops|lora]
#     small          one case (seconds)
#     shapes, edges  every tensor-core configuration, GQA, odd T and D; T = 1, tile edges, windows
#                    of 1 and > T, rows whose keys are all padding (a minute each)
#     masks          every mask combination on both paths (several minutes)
#     test_cuda_ops  tests/gpu/test_cuda_ops.c's attention_backward harness on small cases, then
#                    again with the unmasked ones on attention_sm90.cu's kernel (EMU_SM90=1)
#     lora           tests/gpu/test_cuda_backward.c's lora_backward harness on lora.cu's tensor-core
#                    backward (lora_main.c's cases), then again with late cp.async and warps
#                    drifting apart (a barrier removed from lora_dA_kernel fails 5 of 31 there); seconds
#   EMU_DEFERRED=1 (cp.async lands at the wait) and EMU_SHUFFLE=<seed> (warps drift apart between
#   barriers) vary the schedule; see emu.h. Run from the repository root after `make`.
set -e
dir=tests/bench/attention_emu
build="${BUILD:-build}"
out=$build/attention_emu
mkdir -p $out
CXX="${CXX:-g++} -std=c++20 -O2 -I. -I$out -I$dir -isystem ${CUDA_HOME:-/usr/local/cuda}/include"
python3 $dir/transform.py kernels/cuda/attention.cu $out/attn_emu.inc
python3 $dir/transform.py kernels/cuda/attention_sm90.cu $out/attn_sm90_emu.inc
python3 $dir/transform.py kernels/cuda/lora.cu $out/lora_emu.inc
$CXX -c $dir/emu.cpp -o $out/emu.o
# link NAME MAIN.o FAKE.o: the fakes come first and win over the library's CUDA layer
link() {
    $CXX -c $dir/fake_mem.cpp -o $out/fake_mem.o
    ${CXX%% *} -o $out/$1 $2 $3 $out/fake_mem.o $out/emu.o $build/libmedgem.a \
        -Wl,--allow-multiple-definition -L${CUDA_HOME:-/usr/local/cuda}/lib64 -lcublasLt -lcudart_static \
        -lsentencepiece -lz -lgomp -lm -ldl -lrt -lpthread
}
cc_test() { ${CC:-cc} -std=c11 -O2 -fopenmp -D_GNU_SOURCE -I. -isystem ${CUDA_HOME:-/usr/local/cuda}/include -c "$@"; }
case "${1:-small}" in
test_cuda_ops)
    $CXX -c $dir/fake_cuda.cpp -o $out/fake_cuda.o
    cc_test $dir/test_main.c -o $out/test_main.o
    link test_cuda_ops_emu $out/test_main.o $out/fake_cuda.o
    $out/test_cuda_ops_emu
    EMU_SM90=1 $out/test_cuda_ops_emu ;;
lora)
    $CXX -c $dir/fake_lora.cpp -o $out/fake_lora.o
    cc_test $dir/lora_main.c -o $out/lora_main.o
    link lora_emu $out/lora_main.o $out/fake_lora.o
    $out/lora_emu
    EMU_DEFERRED=1 EMU_SHUFFLE=1 $out/lora_emu ;;
*)
    $CXX $dir/harness.cpp $out/emu.o -o $out/harness
    $out/harness "${1:-small}" ;;
esac
