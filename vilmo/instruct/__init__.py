"""Value instructions (VILMO): stakes, principles, candidates, the scorer and the generators."""
