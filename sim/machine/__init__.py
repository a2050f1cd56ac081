"""The machine model: the compiler, the instruction-level model and the cycle model of the accelerator."""
