#!/bin/sh
# Trains the tiny Gemma-like SentencePiece BPE model used by the tokenizer fixtures.
# Run from anywhere: sh tests/golden/make_tokenizer.sh (needs Debian's `sentencepiece` package).
# Settings mirror Gemma 3's tokenizer.model: BPE, byte fallback, no dummy prefix, identity
# normalization, whitespace kept, digits split, ids pad 0 / eos 1 / bos 2 / unk 3, and the
# Gemma control strings as user-defined pieces so they never merge with neighbours.
# Newline runs are user-defined pieces too (Gemma has "\n"=107, "\n\n"=108, "\n\n\n"=109 ...).
set -eu
dir=$(cd "$(dirname "$0")/tokenizer" && pwd)
nl='
'
symbols="<mask>,[multimodal],<start_of_turn>,<end_of_turn>,<start_of_image>,<end_of_image>"
symbols="$symbols,$nl,$nl$nl,$nl$nl$nl,$nl$nl$nl$nl"
cd "$dir"
spm_train --input=corpus.txt --model_prefix=tokenizer --model_type=bpe --vocab_size=512 \
  --character_coverage=1.0 --byte_fallback=true --add_dummy_prefix=false \
  --normalization_rule_name=identity --remove_extra_whitespaces=false --split_digits=true \
  --allow_whitespace_only_pieces=true --split_by_whitespace=true \
  --pad_id=0 --eos_id=1 --bos_id=2 --unk_id=3 \
  --pad_piece='<pad>' --eos_piece='<eos>' --bos_piece='<bos>' --unk_piece='<unk>' \
  --user_defined_symbols="$symbols" --num_threads=1 --seed_sentencepiece_size=100000
rm -f tokenizer.vocab
