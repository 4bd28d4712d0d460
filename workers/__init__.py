"""Ready-made workers built only on otp's public API, and the ports of the article's examples."""
