"""Training engine: the fit loop (:mod:`.loop`), checkpoints and resume state (:mod:`.checkpoint`),
AUC/LogLoss (:mod:`.metrics`) and DDP data parallelism (:mod:`.distributed`)."""
