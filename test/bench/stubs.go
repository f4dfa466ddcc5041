package main

func benchIPAM()     {}
func benchLocalVPC() {}
func benchTask()     {}
