-- Metrics a request learnt after its client-shard script, written once its response is
-- sent. KEYS[1]: a shard's metrics hash; ARGV: (when, field, amount) triples, all 'always'.
count_metrics(KEYS[1], 1, '')
return 'ok'
