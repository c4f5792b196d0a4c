"""Job types that dojo runs: presentation rendering, clip crawling, samples."""
