"""avalanche-exmask."""
