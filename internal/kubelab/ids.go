package kubelab

import (
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
)

var everything = labels.Everything()

// imageID is the digest a container runtime would report for image (the lab pulls nothing:
// the digest is derived from the reference, so the same image has the same id everywhere).
func imageID(image string) string {
	repo := image
	if i := strings.LastIndexByte(image, ':'); i > strings.LastIndexByte(image, '/') {
		repo = image[:i]
	}
	sum := sha256.Sum256([]byte(image))
	return repo + "@sha256:" + hex.EncodeToString(sum[:])
}

// containerID changes with every restart, as a runtime's does.
func containerID(uid types.UID, name string, restarts int32) string {
	sum := sha256.Sum256([]byte(string(uid) + "/" + name + "/" + strconv.Itoa(int(restarts))))
	return "containerd://" + hex.EncodeToString(sum[:])
}
