//! Boxes and their overlap.

/// `[x0, y0, x1, y1]`.
pub type Bbox = [f32; 4];

/// (x1 − x0) · (y1 − y0), as torchvision's `box_area`.
pub fn area(b: &Bbox) -> f32 {
    (b[2] - b[0]) * (b[3] - b[1])
}

/// Intersection over union as torchvision's `box_iou` computes it (no +1 pixel): the intersection's
/// sides clamped at 0, over area(a) + area(b) − intersection. 0 where the union is empty (torchvision
/// gives NaN there; no matcher or NMS should see a NaN).
pub fn iou(a: &Bbox, b: &Bbox) -> f32 {
    let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = w * h;
    let union = area(a) + area(b) - inter;
    if union > 0.0 {
        inter / union
    } else {
        0.0
    }
}

/// IoU of every `a` with every `b`, row-major `[a.len(), b.len()]`.
pub fn iou_matrix(a: &[Bbox], b: &[Bbox]) -> Vec<f32> {
    a.iter().flat_map(|x| b.iter().map(move |y| iou(x, y))).collect()
}

/// `[x0, y0, x1, y1]` → `[cx, cy, w, h]`.
pub fn to_cxcywh(b: &Bbox) -> [f32; 4] {
    let (w, h) = (b[2] - b[0], b[3] - b[1]);
    [b[0] + 0.5 * w, b[1] + 0.5 * h, w, h]
}

/// `b` in an image `sx` times as wide and `sy` times as tall.
pub fn scale_box(b: &Bbox, sx: f32, sy: f32) -> Bbox {
    [b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy]
}

/// Clamps a box into `[0, width] × [0, height]` (torchvision's `clip_boxes_to_image`).
pub fn clip(b: &Bbox, width: f32, height: f32) -> Bbox {
    [b[0].clamp(0.0, width), b[1].clamp(0.0, height), b[2].clamp(0.0, width), b[3].clamp(0.0, height)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iou_of_known_boxes() {
        // 2×2 squares overlapping in a 1×2 strip: 2 / (4 + 4 − 2)
        assert_eq!(iou(&[0.0, 0.0, 2.0, 2.0], &[1.0, 0.0, 3.0, 2.0]), 2.0 / 6.0);
        assert_eq!(iou(&[0.0, 0.0, 1.0, 1.0], &[0.0, 0.0, 1.0, 1.0]), 1.0);
        // touching edges: no overlap; disjoint: 0; empty boxes: 0, not NaN
        assert_eq!(iou(&[0.0, 0.0, 1.0, 1.0], &[1.0, 0.0, 2.0, 1.0]), 0.0);
        assert_eq!(iou(&[0.0, 0.0, 1.0, 1.0], &[5.0, 5.0, 6.0, 6.0]), 0.0);
        assert_eq!(iou(&[1.0, 1.0, 1.0, 1.0], &[1.0, 1.0, 1.0, 1.0]), 0.0);
        assert_eq!(iou_matrix(&[[0.0, 0.0, 2.0, 2.0]], &[[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 2.0, 2.0]]), vec![0.25, 1.0]);
    }
}
