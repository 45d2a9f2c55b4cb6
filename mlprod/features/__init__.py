"""Features: declared once, compiled to SQL, evaluated under one point-in-time rule."""
