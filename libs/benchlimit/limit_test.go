package benchlimit

import "testing"

func TestMedianAndCryptoRate(t *testing.T) {
	if got := Median([]float64{3, 1, 2}); got != 2 {
		t.Errorf("Median(3, 1, 2) = %v", got)
	}
	if r := CryptoRate(make([]byte, 2<<20), 1<<20); r <= 0 {
		t.Errorf("CryptoRate = %v MB/s", r)
	}
}
