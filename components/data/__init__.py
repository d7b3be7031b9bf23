"""Data layer: raw formats, synthetic generator, validation gate, preprocessing, batch loader."""
