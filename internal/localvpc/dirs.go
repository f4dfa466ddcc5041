package localvpc

import (
	"fmt"
	"os"
	"path/filepath"
)

// resolveDir is dir with its symbolic links resolved (/var/run is /run on
// most systems), created first if it is missing.
func resolveDir(dir string) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("failed to create %s: %w", dir, err)
	}
	real, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return "", fmt.Errorf("failed to resolve %s: %w", dir, err)
	}
	return real, nil
}
