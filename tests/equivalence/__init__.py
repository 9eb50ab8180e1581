"""Equivalence tests, the centre of the suite: streaming == the masked training forward (one session, batched streams,
policies, bf16 and pretrained decoders, Whisper's windows, context lists, formatted and word-start targets) and the
rules it rests on (groups, positions, masks). Most mutants of tools/checks/mutants.py are caught here."""
