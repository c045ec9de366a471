"""The acmenfs command line."""
