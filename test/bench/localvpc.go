package main

// benchLocalVPC is filled in by the localvpc section.
func benchLocalVPC() {}
