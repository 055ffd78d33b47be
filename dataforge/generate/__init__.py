"""Generation: seeds, textbooks and chain-of-thought from a teacher model."""
