"""Using adapters: predict (one base, many adapters, mixed batches), batcher (the scheduler
that merges requests into those batches), evaluate a file, export a merged model. Uses the
method, the data pipeline and the trainer's task code.
"""
