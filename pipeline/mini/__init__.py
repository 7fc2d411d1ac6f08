"""The miniature of issue 6: a world with known identities where the whole DSD method runs on a CPU."""
