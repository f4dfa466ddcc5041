package main

// benchTask is filled in by the task section.
func benchTask() {}
