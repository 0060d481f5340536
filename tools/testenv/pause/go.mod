// The pod sandbox's process: there is no registry to pull a pause image from, so the test node
// builds its own.
module aimd.local/testenv/pause

go 1.25.0
