"""Online experiments (A/B tests) of the feed's ranking configuration."""
