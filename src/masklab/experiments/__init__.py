"""One module per notebook: the steps that notebook calls, in the order it calls them."""
