package guard

// KeyCount reports how many callers l tracks under its default policy (tests only).
func KeyCount(l *Limiter) int { return l.def.store.len() }
