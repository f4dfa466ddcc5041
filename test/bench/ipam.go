package main

// benchIPAM is filled in by the ipam section.
func benchIPAM() {}
