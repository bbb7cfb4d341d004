# medgem: one honest Makefile. Read top to bottom: options, dependency checks, then targets.
#   make            build/medgem, build/libmedgem.a, build/libmedgem.so (+ build/lib/*.so it needs)
#   make deps       apt-get the Debian packages the build needs
#   make test       build and run every test that needs no GPU (CI runs this)
#   make test-asan  the same suite under AddressSanitizer + UndefinedBehaviorSanitizer
#   make test-valgrind  the in-process CPU tests under valgrind (memcheck, leaks)
#   make fuzz       libFuzzer targets (clang) for the parsers of untrusted files, FUZZ_SECONDS each
#   make test-gpu   build and run the GPU tests; `make test-gpu PREBUILT=yes` runs the binaries already
#                   in build/ (a GPU machine that got build/ copied and has no build deps)
#   make bench      (GPU machine) every benchmark in one run and one table, medgem against PyTorch
#                   (tests/bench/run_bench.sh; BENCH_E2E=0 skips eval and training; raw outputs, the
#                   table and bench_table.json in $OUT); `make bench PREBUILT=yes` runs what is in build/
#   make examples   examples/*.c against build/libmedgem.so and build/libmedgem.a (build/examples/)
#   make install PREFIX=/usr/local   header, libmedgem.so.0 (+ .a), medgem, medgem.pc; make uninstall
#   make clean
#   make CUDA=no    the CPU-only medgem (what `make` builds when the CUDA toolkit is missing)

# ---- options -------------------------------------------------------------------------------
CUDA_HOME ?= $(if $(wildcard /usr/local/cuda/bin/nvcc),/usr/local/cuda,$(patsubst %/bin/nvcc,%,$(shell command -v nvcc 2>/dev/null)))
# sm_80: the users' A100; sm_90a: the H100 (wgmma); compute_90 PTX so newer GPUs can JIT.
CUDA_ARCH ?= -gencode=arch=compute_80,code=sm_80 -gencode=arch=compute_90a,code=sm_90a -gencode=arch=compute_90,code=compute_90
OPT ?= -O2
# CUDA=auto: with the GPU kernels when nvcc is found, else the CPU-only build; yes: require nvcc;
# no: the CPU-only build (kernels/cpu/no_cuda.c stands in for the CUDA entry points).
CUDA ?= auto
ifneq ($(filter-out auto yes no,$(CUDA)),)
  $(error CUDA must be auto, yes or no)
endif
# SANITIZE=address|undefined|address,undefined builds into its own folder (build/san-address, ...)
# so sanitized and plain objects never mix: `make SANITIZE=address test`.
SANITIZE ?=
# make install: where (PREFIX) and, for packagers, a staging root (DESTDIR).
PREFIX ?= /usr/local
DESTDIR ?=
# PREBUILT=yes: test-gpu and bench run what is in build/ without rebuilding (and without needing nvcc).
PREBUILT ?= no
ifneq ($(filter-out yes no,$(PREBUILT)),)
  $(error PREBUILT must be yes or no)
endif
comma := ,
ifneq ($(filter-out address undefined address$(comma)undefined,$(SANITIZE)),)
  $(error SANITIZE must be empty, address, undefined or address,undefined)
endif

CC  ?= gcc
CXX ?= g++
NVCC = $(CUDA_HOME)/bin/nvcc
BUILD = build$(if $(SANITIZE),/san-$(subst $(comma),-,$(SANITIZE)),)

# The library's version is the public header's; the soname carries its major number.
VERSION := $(shell sed -n 's/^\#define MEDGEM_VERSION "\(.*\)"/\1/p' engine/medgem.h)
SOMAJOR := $(firstword $(subst ., ,$(VERSION)))
SONAME  := libmedgem.so.$(SOMAJOR)

# ---- dependency detection --------------------------------------------------------------------
ifeq ($(CUDA),no)
  $(info ✓ CPU-only build (CUDA=no))
else ifeq ($(wildcard $(NVCC)),)
  ifeq ($(CUDA),yes)
    $(error nvcc not found (set CUDA_HOME, or install CUDA 13); `make CUDA=no` builds the CPU-only medgem)
  endif
  $(info ✗ CUDA toolkit not found (set CUDA_HOME to use one): building the CPU-only medgem (`make CUDA=no` forces this))
  override CUDA := no
else
  $(info ✓ CUDA at $(CUDA_HOME))
  override CUDA := yes
endif
ifeq ($(wildcard /usr/include/sentencepiece_processor.h),)
  $(info ✗ libsentencepiece-dev missing: run `make deps`)
else
  $(info ✓ libsentencepiece)
endif
ifeq ($(wildcard /usr/include/stb/stb_image.h),)
  $(info ✗ libstb-dev missing: run `make deps`)
else
  $(info ✓ stb_image)
endif

# ---- flags -----------------------------------------------------------------------------------
# -fPIC everywhere: the same objects go into libmedgem.a and libmedgem.so.
# -fopenmp: the CPU reference ops parallelise plain loops over rows.
SAN_FLAGS = $(if $(SANITIZE),-fsanitize=$(SANITIZE) -fno-omit-frame-pointer,)
CFLAGS   = -std=c11 $(OPT) -g -Wall -Wextra -Werror=implicit-function-declaration -fPIC -fopenmp \
           -D_GNU_SOURCE -I. -I/usr/include/stb $(if $(filter yes,$(CUDA)),-isystem $(CUDA_HOME)/include,) $(SAN_FLAGS)
CXXFLAGS = -std=c++17 $(OPT) -g -Wall -Wextra -fPIC -I. $(SAN_FLAGS)
NVFLAGS  = -std=c++17 $(OPT) -g -Xcompiler -fPIC,-Wall,-Wextra -I. $(CUDA_ARCH) --expt-relaxed-constexpr
# cudart is linked statically; cuBLASLt (too large to copy beside the binary) is found in the CUDA
# install through its rpath; libsentencepiece is copied into build/lib and found through $ORIGIN/lib
# (../lib and ../../lib for the test programs under build/tests/).
CUDA_LIBS = $(if $(filter yes,$(CUDA)),-L$(CUDA_HOME)/lib64 -lcublasLt -lcudart_static,)
LDLIBS   = $(CUDA_LIBS) -lsentencepiece -lz -lstdc++ -lgomp -lm -ldl -lrt -lpthread $(SAN_FLAGS)
# $ORIGIN/medgem and $ORIGIN/../lib/medgem: where `make install` puts libsentencepiece beside
# PREFIX/lib/libmedgem.so and PREFIX/bin/medgem.
RPATH    = -Wl,-rpath,'$$ORIGIN/lib' -Wl,-rpath,'$$ORIGIN/../lib' -Wl,-rpath,'$$ORIGIN/../../lib' \
           -Wl,-rpath,'$$ORIGIN/medgem' -Wl,-rpath,'$$ORIGIN/../lib/medgem' $(if $(filter yes,$(CUDA)),-Wl$(comma)-rpath$(comma)$(CUDA_HOME)/lib64,)

# ---- sources ---------------------------------------------------------------------------------
LIB_C   = $(filter-out $(if $(filter yes,$(CUDA)),kernels/cpu/no_cuda.c,),$(wildcard engine/*.c engine/jobs/*.c model/*.c kernels/cpu/*.c tokenizer/*.c data/*.c))
LIB_CXX = $(wildcard tokenizer/*.cpp)
LIB_CU  = $(if $(filter yes,$(CUDA)),$(wildcard kernels/cuda/*.cu),)
CLI_C   = $(wildcard engine/cli/*.c)
TESTS   = $(patsubst tests/%.c,$(BUILD)/tests/%,$(wildcard tests/test_*.c))
GPU_TESTS = $(patsubst tests/gpu/%.c,$(BUILD)/tests/gpu/%,$(wildcard tests/gpu/test_*.c))

LIB_OBJ = $(LIB_C:%.c=$(BUILD)/obj/%.o) $(LIB_CXX:%.cpp=$(BUILD)/obj/%.o) $(LIB_CU:%.cu=$(BUILD)/obj/%.o)
CLI_OBJ = $(CLI_C:%.c=$(BUILD)/obj/%.o)

# ---- targets ---------------------------------------------------------------------------------
.PHONY: fuzz fuzz-build
.PHONY: all deps test test-asan asan-suite test-valgrind test-gpu bench clean FORCE gpu-needs-cuda examples install uninstall
all: $(BUILD)/medgem $(BUILD)/libmedgem.a $(BUILD)/libmedgem.so $(BUILD)/$(SONAME) $(BUILD)/lib/libsentencepiece.so.0

# The Debian packages the build and the tests need (run as root or through sudo).
deps:
	$(if $(shell command -v sudo 2>/dev/null),sudo,) apt-get update -qq
	$(if $(shell command -v sudo 2>/dev/null),sudo,) apt-get install -y --no-install-recommends \
	    build-essential libsentencepiece-dev sentencepiece libstb-dev zlib1g-dev python3 valgrind pkg-config

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@
$(BUILD)/obj/%.o: %.cpp
	@mkdir -p $(dir $@)
	$(CXX) $(CXXFLAGS) -MMD -MP -c $< -o $@
$(BUILD)/obj/%.o: %.cu
	@mkdir -p $(dir $@)
	$(NVCC) $(NVFLAGS) -MMD -MP -c $< -o $@

# The configuration the objects were built for: switching CUDA=yes/no in one build folder relinks.
$(BUILD)/config.stamp: FORCE
	@mkdir -p $(dir $@)
	@echo "CUDA=$(CUDA)" | cmp -s - $@ || echo "CUDA=$(CUDA)" > $@
FORCE:

$(BUILD)/libmedgem.a: $(LIB_OBJ) $(BUILD)/config.stamp
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $(LIB_OBJ)

# The shared library carries the static cudart so embedders need only the driver. Its soname is
# libmedgem.so.<major> (the ABI promise of engine/medgem.h); build/libmedgem.so.0 links to it so that
# programs linked against build/libmedgem.so find it at run time.
$(BUILD)/libmedgem.so: $(LIB_OBJ) $(BUILD)/config.stamp
	$(CXX) -shared -Wl,-soname,$(SONAME) -o $@ $(LIB_OBJ) $(RPATH) $(LDLIBS)
$(BUILD)/$(SONAME): $(BUILD)/libmedgem.so
	ln -sf libmedgem.so $@

$(BUILD)/medgem: $(CLI_OBJ) $(BUILD)/libmedgem.a $(BUILD)/lib/libsentencepiece.so.0
	$(CC) -o $@ $(CLI_OBJ) $(BUILD)/libmedgem.a $(RPATH) $(LDLIBS)

# Copy the sentencepiece runtime beside the binary: the GPU machine does not have it.
$(BUILD)/lib/libsentencepiece.so.0:
	@mkdir -p $(dir $@)
	cp -L $$(ldconfig -p | awk '/libsentencepiece.so.0 /{print $$NF; exit}') $@

# -MMD: a test is rebuilt when a header it includes changes (tests/test.h, tests/gpu/op_harness.h)
$(BUILD)/tests/%: tests/%.c $(BUILD)/libmedgem.a $(BUILD)/lib/libsentencepiece.so.0
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -MF $@.d -o $@ $< $(BUILD)/libmedgem.a $(RPATH) $(LDLIBS)

# ---- examples: the public header only (-Iengine, not -I.), against each library ---------------
EXAMPLES = $(patsubst examples/%.c,%,$(wildcard examples/*.c))
EXAMPLE_BINS = $(foreach e,$(EXAMPLES),$(BUILD)/examples/$(e) $(BUILD)/examples/$(e)_static)
EXAMPLE_CFLAGS = -std=c11 $(OPT) -g -Wall -Wextra -Iengine $(SAN_FLAGS)
examples: $(EXAMPLE_BINS)
$(BUILD)/examples/%: examples/%.c engine/medgem.h $(BUILD)/libmedgem.so $(BUILD)/$(SONAME)
	@mkdir -p $(dir $@)
	$(CC) $(EXAMPLE_CFLAGS) -o $@ $< -L$(BUILD) -lmedgem -Wl,-rpath,'$$ORIGIN/..' $(SAN_FLAGS)
$(BUILD)/examples/%_static: examples/%.c engine/medgem.h $(BUILD)/libmedgem.a $(BUILD)/lib/libsentencepiece.so.0
	@mkdir -p $(dir $@)
	$(CC) $(EXAMPLE_CFLAGS) -o $@ $< $(BUILD)/libmedgem.a $(RPATH) $(LDLIBS)

# valgrind programs (tests/valgrind/*.c, the public header only, static library)
$(BUILD)/valgrind/%: tests/valgrind/%.c engine/medgem.h $(BUILD)/libmedgem.a $(BUILD)/lib/libsentencepiece.so.0
	@mkdir -p $(dir $@)
	$(CC) $(EXAMPLE_CFLAGS) -o $@ $< $(BUILD)/libmedgem.a $(RPATH) $(LDLIBS)

# ---- install ---------------------------------------------------------------------------------
# PREFIX/include/medgem.h, PREFIX/lib/libmedgem.so.VERSION (+ .so.MAJOR, .so links), libmedgem.a,
# PREFIX/lib/medgem/libsentencepiece.so.0 (the runtime the library was built with; the GPU machine
# lacks it), PREFIX/bin/medgem, PREFIX/lib/pkgconfig/medgem.pc and medgem-static.pc (libmedgem.a).
INSTALL_LIB = $(DESTDIR)$(PREFIX)/lib
PC_PRIVATE  = -L$${libdir}/medgem -Wl,-rpath,$${libdir}/medgem \
              $(if $(filter yes,$(CUDA)),-L$(CUDA_HOME)/lib64 -Wl$(comma)-rpath$(comma)$(CUDA_HOME)/lib64 -lcublasLt -lcudart_static,) \
              -lsentencepiece -lz -lstdc++ -lgomp -lm -ldl -lrt -lpthread
install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/include $(INSTALL_LIB)/pkgconfig $(INSTALL_LIB)/medgem
	install -m 644 engine/medgem.h $(DESTDIR)$(PREFIX)/include/medgem.h
	install -m 755 $(BUILD)/libmedgem.so $(INSTALL_LIB)/libmedgem.so.$(VERSION)
	ln -sf libmedgem.so.$(VERSION) $(INSTALL_LIB)/$(SONAME)
	ln -sf $(SONAME) $(INSTALL_LIB)/libmedgem.so
	install -m 644 $(BUILD)/libmedgem.a $(INSTALL_LIB)/libmedgem.a
	install -m 755 $(BUILD)/lib/libsentencepiece.so.0 $(INSTALL_LIB)/medgem/libsentencepiece.so.0
	ln -sf libsentencepiece.so.0 $(INSTALL_LIB)/medgem/libsentencepiece.so
	install -m 755 $(BUILD)/medgem $(DESTDIR)$(PREFIX)/bin/medgem
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@VERSION@|$(VERSION)|' -e 's|@PRIVATE@|$(strip $(PC_PRIVATE))|' \
	    pkgconfig/medgem.pc.in > $(INSTALL_LIB)/pkgconfig/medgem.pc
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@VERSION@|$(VERSION)|' -e 's|@PRIVATE@|$(strip $(PC_PRIVATE))|' \
	    pkgconfig/medgem-static.pc.in > $(INSTALL_LIB)/pkgconfig/medgem-static.pc
uninstall:
	rm -f $(DESTDIR)$(PREFIX)/include/medgem.h $(DESTDIR)$(PREFIX)/bin/medgem \
	      $(INSTALL_LIB)/libmedgem.so.$(VERSION) $(INSTALL_LIB)/$(SONAME) $(INSTALL_LIB)/libmedgem.so \
	      $(INSTALL_LIB)/libmedgem.a $(INSTALL_LIB)/medgem/libsentencepiece.so.0 $(INSTALL_LIB)/medgem/libsentencepiece.so \
	      $(INSTALL_LIB)/pkgconfig/medgem.pc $(INSTALL_LIB)/pkgconfig/medgem-static.pc
	-rmdir $(INSTALL_LIB)/medgem 2>/dev/null

# Each test binary prints "RESULT <p> passed, <f> failed"; the runner sums them.
# tests/test_examples runs the examples; tests/test_install installs into a temporary prefix.
# tests/bench/bench_table.py --self-test: the `make bench` table's parsers on recorded outputs (python3 is in deps).
# The attention kernels in the CPU emulator (tests/bench/attention_emu) and the bench table's
# parsers first, so that the suite's "N passed, N failed" stays the last line.
test: all examples $(BUILD)/valgrind/api_lifecycle $(TESTS)
	@$(if $(filter no,$(CUDA))$(SANITIZE),echo "attention emulator: skipped (it links the plain CUDA build's library)",sh tests/bench/attention_emu/run.sh test_cuda_ops)
	@python3 tests/bench/bench_table.py --self-test
	@sh tests/run_tests.sh $(TESTS)

# The CPU suite under AddressSanitizer + UndefinedBehaviorSanitizer (objects in build/san-address-undefined).
# test_install is left out: it links a program outside the build against the installed library,
# which a sanitized library cannot serve.
ASAN_TESTS = $(filter-out %/test_install,$(TESTS))
test-asan:
	$(MAKE) SANITIZE=address,undefined asan-suite
asan-suite: all examples $(BUILD)/valgrind/api_lifecycle $(ASAN_TESTS)
	@sh tests/run_tests.sh $(ASAN_TESTS)

# The in-process CPU tests under valgrind's memcheck: an invalid read or write, a use of an
# uninitialised value or a leak (definite, indirect or possible) fails the test. OpenMP runs one
# thread (valgrind serialises threads anyway). Left out, as docs/reliability.md says: the tests that
# drive build/medgem in child processes (valgrind does not follow exec; tests/valgrind/api_lifecycle
# covers the library behind them). About 10 minutes on 2 cores.
VALGRIND_TESTS = $(patsubst %,$(BUILD)/tests/test_%,answer api config cpu_ops cpu_backward data_bad data_index \
                   data_resize dtype_convert fp16_load fuzz_regress generate json lora metrics model_cpu oom \
                   prompt safetensors tokenizer train_peft weights)
VALGRIND_CMD = valgrind -q --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite,indirect,possible \
               --suppressions=tests/valgrind/libgomp.supp
test-valgrind: all $(VALGRIND_TESTS)
	@command -v valgrind >/dev/null || { echo "valgrind is not installed: run make deps" >&2; exit 1; }
	@OMP_NUM_THREADS=1 MG_TEST_WRAP="$(VALGRIND_CMD)" sh tests/run_tests.sh $(VALGRIND_TESTS)

# ---- fuzzing (libFuzzer, Debian's clang) ------------------------------------------------------
# tests/fuzz/fuzz_<name>.c: one target per parser of untrusted files (tests/fuzz/fuzz_targets.h).
# The CPU-only library sources (the CUDA=no list: kernels/cpu/no_cuda.c, no .cu) are compiled by
# clang with coverage + ASan + UBSan into build/fuzz/, each target is linked with -fsanitize=fuzzer,
# seeded from tests/fuzz/corpus/<name>/ and run FUZZ_SECONDS. New inputs go to build/fuzz/corpus/<name>/,
# a crash to build/fuzz/crash-<name>-*: fix the bug, keep the input in tests/fuzz/regress/<name>/
# (tests/test_fuzz_regress.c replays it in `make test`).
FUZZ_SECONDS ?= 30
FUZZ_CC  ?= clang
FUZZ_CXX ?= clang++
FUZZ_DIR  = build/fuzz
FUZZ_SAN  = -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
FUZZ_CFLAGS   = -std=c11 -O1 -g -Wall -Wextra -D_GNU_SOURCE -I. -I/usr/include/stb $(FUZZ_SAN) -DMG_FUZZ_ROOT='"$(CURDIR)"'
FUZZ_CXXFLAGS = -std=c++17 -O1 -g -Wall -Wextra -I. $(FUZZ_SAN)
FUZZ_LIB_C = $(wildcard engine/*.c engine/jobs/*.c model/*.c kernels/cpu/*.c tokenizer/*.c data/*.c)
FUZZ_OBJ   = $(FUZZ_LIB_C:%.c=$(FUZZ_DIR)/obj/%.o) $(LIB_CXX:%.cpp=$(FUZZ_DIR)/obj/%.o)
FUZZ_NAMES = $(patsubst tests/fuzz/fuzz_%.c,%,$(wildcard tests/fuzz/fuzz_*.c))
FUZZ_BINS  = $(FUZZ_NAMES:%=$(FUZZ_DIR)/fuzz_%)
# -max_len per target: text formats small, archives and images larger.
FUZZ_MAXLEN_json = 4096
FUZZ_MAXLEN_config = 4096
FUZZ_MAXLEN_lora = 4096
FUZZ_MAXLEN_folds = 4096
FUZZ_MAXLEN_safetensors = 8192
FUZZ_MAXLEN_targz = 16384
FUZZ_MAXLEN_spm = 16384
FUZZ_MAXLEN_image = 32768

# stb_image (Debian's libstb, not ours) computes NULL + 0 and memcpy(NULL, p, 0) for a PNG whose first IDAT is empty
# (tests/fuzz/regress/image/): harmless, but those two UBSan checks stop the run on it.
$(FUZZ_DIR)/obj/data/image.o: FUZZ_CFLAGS += -fno-sanitize=pointer-overflow,nonnull-attribute
$(FUZZ_DIR)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -MMD -MP -c $< -o $@
$(FUZZ_DIR)/obj/%.o: %.cpp
	@mkdir -p $(dir $@)
	$(FUZZ_CXX) $(FUZZ_CXXFLAGS) -MMD -MP -c $< -o $@
$(FUZZ_DIR)/libmedgem_fuzz.a: $(FUZZ_OBJ)
	rm -f $@ && ar rcs $@ $(FUZZ_OBJ)
$(FUZZ_DIR)/fuzz_%: tests/fuzz/fuzz_%.c tests/fuzz/fuzz_targets.h $(FUZZ_DIR)/libmedgem_fuzz.a
	$(FUZZ_CC) $(FUZZ_CFLAGS) -c $< -o $@.o
	$(FUZZ_CXX) -fsanitize=fuzzer,address,undefined -o $@ $@.o $(FUZZ_DIR)/libmedgem_fuzz.a \
	    -lsentencepiece -lz -lm -ldl -lrt -lpthread
fuzz-build: $(FUZZ_BINS)
# One line per target: its runs, time and whether it crashed (the whole log in build/fuzz/<name>.log).
fuzz: fuzz-build
	@$(foreach t,$(FUZZ_NAMES),mkdir -p $(FUZZ_DIR)/corpus/$(t) && echo "== fuzz_$(t): $(FUZZ_SECONDS) s, -max_len=$(FUZZ_MAXLEN_$(t))" && \
	    { $(FUZZ_DIR)/fuzz_$(t) $(FUZZ_DIR)/corpus/$(t) tests/fuzz/corpus/$(t) -max_total_time=$(FUZZ_SECONDS) \
	        -max_len=$(FUZZ_MAXLEN_$(t)) -artifact_prefix=$(FUZZ_DIR)/crash-$(t)- -print_final_stats=1 \
	        > $(FUZZ_DIR)/$(t).log 2>&1 && echo "   no crash" || echo "   CRASH: see $(FUZZ_DIR)/$(t).log and $(FUZZ_DIR)/crash-$(t)-*"; } && \
	    grep -E '^stat::(number_of_executed_units|average_exec_per_sec|new_units_added|peak_rss_mb)|^SUMMARY' $(FUZZ_DIR)/$(t).log | sed 's/^/   /' ;) true

test-gpu: $(if $(filter yes,$(PREBUILT)),,$(if $(filter no,$(CUDA)),gpu-needs-cuda,all $(GPU_TESTS)))
	@sh tests/run_tests.sh $(GPU_TESTS)
gpu-needs-cuda:
	@echo "make test-gpu and make bench need the CUDA build (nvcc); this is the CPU-only build (CUDA=no)" >&2; exit 1

# make bench: tests/bench/run_bench.sh (options in its header: BENCH_PARTS, BENCH_E2E=0, batch sizes).
BENCH_BINS = $(BUILD)/bench/libmgbench_kernels.so $(BUILD)/bench/attention $(BUILD)/tests/gpu/fullsize_train
bench: $(if $(filter yes,$(PREBUILT)),,$(if $(filter no,$(CUDA)),gpu-needs-cuda,all $(BENCH_BINS)))
	@sh tests/bench/run_bench.sh

# Kernel lab (STYLE habit 10): tests/bench/<op>.cu includes its production kernel and times it;
# make build/bench/attention. Compiled by nvcc, linked like the library (libmedgem.a supplies the
# context and error helpers; the bench's own copy of the op's entry keeps the archive's out).
$(BUILD)/bench/%: tests/bench/%.cu $(BUILD)/libmedgem.a $(BUILD)/lib/libsentencepiece.so.0
	@mkdir -p $(dir $@)
	$(NVCC) $(NVFLAGS) -c $< -o $@.o
	$(CXX) -o $@ $@.o $(BUILD)/libmedgem.a $(RPATH) $(LDLIBS)
# Kernel bench bridge (tests/bench/kernels.cu): medgem's CUDA ops as a shared library that
# tests/bench/bench_kernels_torch.py loads with ctypes beside torch. Static cudart, like libmedgem.so;
# --exclude-libs,ALL keeps the archives' symbols (cudart's included) private, so torch's own libcudart,
# loaded first and global, cannot interpose on them. Only the archive members it calls are pulled in.
$(BUILD)/bench/libmgbench_kernels.so: $(BUILD)/obj/tests/bench/kernels.o $(BUILD)/libmedgem.a $(BUILD)/lib/libsentencepiece.so.0
	@mkdir -p $(dir $@)
	$(CXX) -shared -Wl,--exclude-libs,ALL -o $@ $< $(BUILD)/libmedgem.a $(RPATH) $(LDLIBS)

# Kernel study helpers: make build/kernels/cuda/rmsnorm.ptx / .sass
$(BUILD)/%.ptx: %.cu
	@mkdir -p $(dir $@)
	$(NVCC) $(NVFLAGS) -gencode=arch=compute_90a,code=compute_90a -ptx $< -o $@
$(BUILD)/%.sass: %.cu
	@mkdir -p $(dir $@)
	$(NVCC) $(NVFLAGS) -cubin -gencode=arch=compute_90a,code=sm_90a $< -o $(BUILD)/$*.cubin && $(CUDA_HOME)/bin/cuobjdump -sass $(BUILD)/$*.cubin > $@

clean:
	rm -rf $(BUILD)

-include $(shell find $(BUILD)/obj $(BUILD)/tests -name '*.d' 2>/dev/null)
-include $(shell find $(FUZZ_DIR)/obj -name '*.d' 2>/dev/null)
