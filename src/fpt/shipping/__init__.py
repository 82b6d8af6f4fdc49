"""Shipping what was trained: run checkpoints (resume), task patches (`fpt export` / `fpt load`), and serving many
patches on one shared frozen core (`fpt serve`)."""
