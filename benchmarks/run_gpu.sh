#!/usr/bin/env bash
# Every GPU check and figure of buildlm, for a lent GPU machine with PyTorch and transformers
# installed (nothing is installed here: the package runs from src/). Logs go to $OUT (or
# /tmp/buildlm-gpu). Parts: tests (the CUDA-only tests and the engine's), decode, profile (one step's kernels),
# train.
#
#     bash benchmarks/run_gpu.sh tests decode     # ~8 minutes on an H100
#     bash benchmarks/run_gpu.sh profile train    # ~7 minutes
set -u
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src:$PWD/benchmarks" PYTHONUNBUFFERED=1
out=${OUT:-/tmp/buildlm-gpu}
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,clocks.max.mem --format=csv | tee "$out/gpu.txt"
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" | tee -a "$out/gpu.txt"
for part in "$@"; do
  case $part in
    tests)
      timeout 200 python3 -m pytest -q -p no:cacheprovider ${TESTS:-tests/infer/test_static_decode.py \
        tests/infer/test_engine.py tests/infer/test_weight_layout.py} 2>&1 | tee "$out/tests.txt" | tail -15 ;;
    decode)
      timeout 300 python3 benchmarks/generate.py --device cuda --dtypes bf16 --batches 1,8,32 --repeats 3 2>&1 | tee "$out/generate_bf16.txt"
      timeout 150 python3 benchmarks/generate.py --device cuda --dtypes fp32 --batches 1 --repeats 3 2>&1 | tee "$out/generate_fp32.txt" ;;
    profile)
      for batch in ${PROFILE_BATCHES:-1 32}; do
        timeout 150 python3 benchmarks/decode_profile.py --batch $batch --dtype bf16 2>&1 | grep -v USDT | tee "$out/profile_b$batch.txt"
      done ;;
    train)
      timeout 400 python3 benchmarks/train_gpu.py 2>&1 | tee "$out/train_gpu.txt" ;;
    *) echo "unknown part $part (tests, decode, profile, train)"; exit 2 ;;
  esac
done
