"""One thin router per resource; each calls the engine and returns a shared schema."""
