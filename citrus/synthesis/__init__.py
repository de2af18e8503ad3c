"""The Citrus data jobs: `citrus label` (open rewrite, difficulty), `citrus synthesize`
(expert-pathway SFT traces), `citrus sample` (preference pairs from a policy's own answers) and
`citrus decontaminate` (n-gram overlap with the benchmarks)."""
