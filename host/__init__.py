"""Everything that runs on the user's computer: training, export, the golden model, datasets, the board driver."""
