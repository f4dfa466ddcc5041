// Package version holds the build stamp of every vpcnet binary: the release
// from the VERSION file and the git commit it was built from. The Makefile
// sets the variables with -ldflags -X; a plain `go build` leaves the defaults.
package version

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
)

// Set at link time by the Makefile.
var (
	version      = "dev"
	gitShortHash = "unknown"
	dirty        = "false"
)

// Info is what `--version` prints, as one JSON object.
type Info struct {
	Version      string `json:"version"`
	GitShortHash string `json:"gitShortHash"`
	Dirty        bool   `json:"dirty"`
}

// Get returns the stamp of the running binary.
func Get() Info {
	return Info{Version: version, GitShortHash: gitShortHash, Dirty: dirty == "true"}
}

// String is the one-line form used in `about` strings and logs.
func (i Info) String() string {
	d := ""
	if i.Dirty {
		d = "-dirty"
	}
	return fmt.Sprintf("%s (%s%s)", i.Version, i.GitShortHash, d)
}

// Print writes the stamp as a JSON line.
func Print(w io.Writer) error {
	return json.NewEncoder(w).Encode(Get())
}

// HandleFlag prints the stamp and exits when the first argument is
// --version or -version. CNI plugins call it before handing over to skel,
// which only knows the CNI VERSION command.
func HandleFlag() {
	if len(os.Args) > 1 && (os.Args[1] == "--version" || os.Args[1] == "-version") {
		if err := Print(os.Stdout); err != nil {
			os.Exit(1)
		}
		os.Exit(0)
	}
}
