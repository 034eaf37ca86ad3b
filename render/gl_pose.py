"""Avatars posed on the GPU: compute shaders turn bone transforms and blendshape weights into
the splatting renderer's Gaussians, so per frame only those (a few KB) cross the bus.

It reproduces the reference poser ``render.skinned.pose_gaussians`` (checked numerically in
tests/test_gl_pose.py), taking the same ``SkinnedGaussians`` and ``SkinPose``:

1. ``VERTEX_SHADER`` (one invocation per template vertex and avatar): rest position + the
   face blendshapes that move it (a sparse list per vertex, ``sparse_blendshapes``: 3,536 of
   the default template's 13,718 vertices move, by 15 blendshapes on average, so 52 k fetches
   a pose where the dense loop over the active blendshapes made up to 713 k: 7.0 -> 2.3 ms of
   CPU with all 52 weights non-zero, as tracking gives them), then linear blend skinning with
   the template's (up to 12) influences and the posed bones' 3x4 transforms
   (``SkinPose.transforms``).
2. ``GAUSSIAN_SHADER`` (one invocation per Gaussian): its triangle's posed frame (x along the
   first edge, z along the normal, y = z x x), the mean at its barycentric point plus the
   offset along the normal, rotation = frame quaternion * local quaternion, scales grown by the
   square root of the triangle's area ratio, and (Lambert shading) albedo * (ambient + diffuse
   max(0, n . light)) clamped to [0, 1], in the avatar's own space; then the avatar's rigid
   placement ``world_from_avatar`` (means and rotations; colours stay lit in avatar space).
   The results go straight into the renderer's params and colour textures.

Static data (rest vertices, blendshapes, skin weights, the Gaussians' bindings) is uploaded
once by ``GLSplatRenderer.upload_avatars``; avatars sharing one template share its arrays.
The CPU keeps forward kinematics (about 1 ms) and the depth sort, for which the posed means
are read back (16 bytes a Gaussian).

``GLPoser`` is the GL backend's poser (``render.skinned.Poser``): it leaves the posing to the
renderer that draws, handing it ``PosedAvatars``.
"""

from __future__ import annotations

import numpy as np

from common.rotation import matrix_to_quat
from render.errors import GLContextLost, RenderError
from render.gl_common import set_uniforms, texel_rows
from render.gl_tiles import ROW, TEXEL_GLSL, rows_for
from render.skinned import PosedAvatars, SkinnedGaussians, SkinPose

GROUP = 64
MAX_BLENDSHAPES = 64
INFLUENCE_TEXELS = 3  # up to 12 skin influences per vertex, 4 per texel


VERTEX_SHADER = f"""
#version 430
layout(local_size_x = {GROUP}) in;
layout(binding = 0) uniform sampler2D rest;          // template vertices
layout(binding = 1) uniform sampler2D blend;         // sparse deltas: xyz, blendshape
layout(binding = 2) uniform usampler2D skin_index;   // {INFLUENCE_TEXELS} texels per vertex
layout(binding = 3) uniform sampler2D skin_weight;
layout(binding = 4) uniform sampler2D bones;         // 3 texels (rows of [R | t]) per bone
layout(binding = 5) uniform usampler2D corr_index;   // correctives: width / 4 texels a slot
layout(binding = 6) uniform sampler2D corr_basis;    // width texels (xyz) a slot
layout(binding = 7) uniform sampler2D features;      // one feature a texel (x)
layout(binding = 8) uniform usampler2D blend_span;   // per vertex: first delta, count
layout(rgba32f, binding = 0) writeonly uniform image2D posed;
uniform int vertex_count;
uniform int template_base;   // first vertex of this template in rest / skin textures
uniform int bone_base;       // first bone of this avatar in the bones texture
uniform int posed_base;      // first vertex of this avatar in the posed texture
uniform int corr_width;      // features per vertex of this avatar's correctives (0: none)
uniform int corr_base;       // first corrective slot (one a vertex) of this avatar
uniform int feature_base;    // first of this avatar's features in the features texture
uniform float blend_weight[{MAX_BLENDSHAPES}];
{TEXEL_GLSL}
void main() {{
    uint v = gl_GlobalInvocationID.x;
    if (v >= uint(vertex_count)) return;
    uint tv = uint(template_base) + v;
    vec3 p = texelFetch(rest, texel(tv, 1, 0), 0).xyz;
    uvec4 span = texelFetch(blend_span, texel(tv, 1, 0), 0);
    for (uint k = span.x; k < span.x + span.y; ++k) {{
        vec4 delta = texelFetch(blend, texel(k, 1, 0), 0);
        p += blend_weight[int(delta.w)] * delta.xyz;
    }}
    uint slot = uint(corr_base) + v;
    for (int s = 0; s < corr_width / 4; ++s) {{
        uvec4 f = texelFetch(corr_index, texel(slot * uint(corr_width / 4) + uint(s), 1, 0), 0);
        for (int j = 0; j < 4; ++j) {{
            float value = texelFetch(features, texel(uint(feature_base) + f[j], 1, 0), 0).x;
            uint item = slot * uint(corr_width) + uint(4 * s + j);
            p += value * texelFetch(corr_basis, texel(item, 1, 0), 0).xyz;
        }}
    }}
    vec4 row0 = vec4(0.0), row1 = vec4(0.0), row2 = vec4(0.0);
    for (int s = 0; s < {INFLUENCE_TEXELS}; ++s) {{
        uvec4 bone = texelFetch(skin_index, texel(tv, {INFLUENCE_TEXELS}, s), 0) + uint(bone_base);
        vec4 weight = texelFetch(skin_weight, texel(tv, {INFLUENCE_TEXELS}, s), 0);
        for (int j = 0; j < 4; ++j) {{
            row0 += weight[j] * texelFetch(bones, texel(bone[j], 3, 0), 0);
            row1 += weight[j] * texelFetch(bones, texel(bone[j], 3, 1), 0);
            row2 += weight[j] * texelFetch(bones, texel(bone[j], 3, 2), 0);
        }}
    }}
    vec4 h = vec4(p, 1.0);
    imageStore(posed, texel(uint(posed_base) + v, 1, 0),
               vec4(dot(row0, h), dot(row1, h), dot(row2, h), 1.0));
}}
"""

GAUSSIAN_SHADER = f"""
#version 430
// WRITE_COLORS is defined by the compiling code. The shading is a per-avatar uniform (one
// room may mix Lambert-lit and baked avatars); its select costs a few flops per Gaussian.
layout(local_size_x = 128) in;
layout(binding = 0) uniform sampler2D posed;
layout(binding = 1) uniform usampler2D corners;      // the triangle's vertex indices
layout(binding = 2) uniform sampler2D bary_offset;   // barycentric xyz, offset along normal
layout(binding = 3) uniform sampler2D local_quat;
layout(binding = 4) uniform sampler2D scale_opacity;
layout(binding = 5) uniform sampler2D albedo_area;   // albedo rgb, rest doubled area
layout(rgba32f, binding = 0) writeonly uniform image2D params;   // 3 planes
layout(rgba32f, binding = 1) writeonly uniform image2D colors;
uniform int count;
uniform int gaussian_base;   // first Gaussian of this avatar (static data and outputs)
uniform int posed_base;
uniform int param_rows;
uniform bool lambert;        // this avatar's shading: Lambert-lit albedo, else baked colours
uniform vec3 light;
uniform float ambient;
uniform float diffuse;
uniform mat3 place_rotation;
uniform vec3 place_translation;
uniform vec4 place_quat;     // wxyz of place_rotation
uniform float opacity_scale; // SkinPose.opacity: fading in and out
{TEXEL_GLSL}
vec4 quat_multiply(vec4 a, vec4 b) {{  // Hamilton product, wxyz
    return vec4(a.x * b.x - a.y * b.y - a.z * b.z - a.w * b.w,
                a.x * b.y + a.y * b.x + a.z * b.w - a.w * b.z,
                a.x * b.z - a.y * b.w + a.z * b.x + a.w * b.y,
                a.x * b.w + a.y * b.z - a.z * b.y + a.w * b.x);
}}

vec4 matrix_to_quat(vec3 cx, vec3 cy, vec3 cz) {{  // columns; Shepperd, as common.rotation
    float m00 = cx.x, m10 = cx.y, m20 = cx.z, m01 = cy.x, m11 = cy.y, m21 = cy.z;
    float m02 = cz.x, m12 = cz.y, m22 = cz.z;
    float trace = m00 + m11 + m22;
    vec4 q;
    if (trace >= m00 && trace >= m11 && trace >= m22) {{
        float s = sqrt(1.0 + trace) * 2.0;
        q = vec4(0.25 * s, (m21 - m12) / s, (m02 - m20) / s, (m10 - m01) / s);
    }} else if (m00 >= m11 && m00 >= m22) {{
        float s = sqrt(1.0 + m00 - m11 - m22) * 2.0;
        q = vec4((m21 - m12) / s, 0.25 * s, (m01 + m10) / s, (m02 + m20) / s);
    }} else if (m11 >= m22) {{
        float s = sqrt(1.0 + m11 - m00 - m22) * 2.0;
        q = vec4((m02 - m20) / s, (m01 + m10) / s, 0.25 * s, (m12 + m21) / s);
    }} else {{
        float s = sqrt(1.0 + m22 - m00 - m11) * 2.0;
        q = vec4((m10 - m01) / s, (m02 + m20) / s, (m12 + m21) / s, 0.25 * s);
    }}
    return normalize(q.x < 0.0 ? -q : q);
}}

void main() {{
    uint i = gl_GlobalInvocationID.x;
    if (i >= uint(count)) return;
    uint g = uint(gaussian_base) + i;
    uvec4 tri = texelFetch(corners, texel(g, 1, 0), 0) + uint(posed_base);
    vec3 v0 = texelFetch(posed, texel(tri.x, 1, 0), 0).xyz;
    vec3 v1 = texelFetch(posed, texel(tri.y, 1, 0), 0).xyz;
    vec3 v2 = texelFetch(posed, texel(tri.z, 1, 0), 0).xyz;
    vec3 e1 = v1 - v0, e2 = v2 - v0;
    vec3 normal = cross(e1, e2);
    float area2 = length(normal);
    vec3 z = normal / max(area2, 1e-12);
    vec3 x = e1 / max(length(e1), 1e-12);
    vec3 y = cross(z, x);
    vec4 bo = texelFetch(bary_offset, texel(g, 1, 0), 0);
    vec3 mean = bo.x * v0 + bo.y * v1 + bo.z * v2 + bo.w * z;
    vec4 quat = quat_multiply(matrix_to_quat(x, y, z), texelFetch(local_quat, texel(g, 1, 0), 0));
    vec4 so = texelFetch(scale_opacity, texel(g, 1, 0), 0);
    vec4 albedo_rest = texelFetch(albedo_area, texel(g, 1, 0), 0);
    vec3 scale = so.xyz * sqrt(area2 / max(albedo_rest.w, 1e-12));
    mean = place_rotation * mean + place_translation;
    quat = quat_multiply(place_quat, quat);
    ivec2 at = ivec2(int(g % {ROW}u), int(g / {ROW}u));
    imageStore(params, at, vec4(mean, so.w * opacity_scale));
    imageStore(params, at + ivec2(0, param_rows), quat);
    imageStore(params, at + ivec2(0, 2 * param_rows), vec4(scale, 0.0));
#if WRITE_COLORS
    float lit = ambient + diffuse * clamp(dot(z, light), 0.0, 1.0);
    vec3 shaded = clamp(albedo_rest.rgb * lit, 0.0, 1.0);
    imageStore(colors, texel(g, 1, 0), vec4(lambert ? shaded : albedo_rest.rgb, 0.0));
#endif
}}
"""


def sparse_blendshapes(blendshapes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(deltas (N, 4): xyz and the blendshape's index, vertex by vertex; spans (V, 4): each
    vertex's first delta and count) of (B, V, 3) blendshapes, leaving out the zero deltas."""
    blendshapes = np.asarray(blendshapes, dtype=np.float32)
    count, vertices = blendshapes.shape[:2]
    per_vertex = blendshapes.transpose(1, 0, 2)  # (V, B, 3): a vertex's deltas together
    moves = np.any(per_vertex != 0, axis=2)
    vertex, shape = np.nonzero(moves)  # row-major: by vertex, then blendshape
    deltas = np.c_[per_vertex[vertex, shape], shape].astype(np.float32)
    counts = np.bincount(vertex, minlength=vertices)
    spans = np.zeros((vertices, 4), np.uint32)
    spans[:, 0] = np.cumsum(counts) - counts
    spans[:, 1] = counts
    return deltas, spans


def check_posable(skinned) -> int:
    """The shared SH count of avatars the GPU poser can pose together, or ``RenderError``
    saying why it cannot (mixed colour forms, too many skin influences or blendshapes)."""
    skinned = list(skinned)
    if not skinned:
        raise RenderError("upload_avatars needs at least one avatar")
    sh_counts = {b.sh_count for b in skinned}
    if len(sh_counts) > 1:
        raise RenderError("avatars posed together must share a colour form (RGB or one SH "
                          f"degree); got SH counts {sorted(sh_counts)}")
    for b in skinned:
        if b.skin_indices.shape[1] > 4 * INFLUENCE_TEXELS:
            raise RenderError(f"{b.skin_indices.shape[1]} skin influences per vertex; the "
                              f"GPU poser takes at most {4 * INFLUENCE_TEXELS}")
        if len(b.blendshapes) > MAX_BLENDSHAPES:
            raise RenderError(f"{len(b.blendshapes)} blendshapes; at most {MAX_BLENDSHAPES}")
    return sh_counts.pop()


class GLPoser:
    """The GL backend's poser: a part is the ``SkinPose`` itself, and ``combine`` gives the
    renderer ``PosedAvatars`` to pose in its compute shaders (``GLAvatarPoser``). It refuses
    (``RenderError``) avatars the shaders cannot take together, before any GL work."""
    where = "gl"

    def pose(self, skinned: SkinnedGaussians, pose: SkinPose) -> SkinPose:
        return pose

    def combine(self, skinned: tuple, parts: list) -> PosedAvatars:
        check_posable(skinned)
        return PosedAvatars(tuple(skinned), tuple(parts))


class GLAvatarPoser:
    """The avatars of a ``GLSplatRenderer``, posed into its Gaussians on the GPU.

    Made by ``GLSplatRenderer.upload_avatars(skinned)``; ``pose(poses)`` runs per frame.
    """

    def __init__(self, renderer, bindings):
        bindings = list(bindings)
        self.sh_count = check_posable(bindings)
        self.renderer = renderer
        self.bindings = bindings
        self.count = sum(len(b) for b in bindings)
        self.last_poses = None
        self._programs = {}
        self.rebuild()

    # -- static data ----------------------------------------------------------------------
    def rebuild(self) -> None:
        """(Re)create the shaders and upload the static arrays (after a lost context too),
        then re-pose the last poses, if any."""
        r = self.renderer
        ctx = r.ctx
        ctx.__enter__()
        try:
            self._vertex_program = ctx.compute_shader(VERTEX_SHADER)
            self._gaussian_program = ctx.compute_shader(
                f"#version 430\n#define WRITE_COLORS {int(self.sh_count == 0)}\n"
                + GAUSSIAN_SHADER.replace("#version 430\n", "", 1))
        except Exception as exc:
            raise RenderError(f"cannot build the GPU posing shaders: {exc}") from exc
        # Templates shared by avatars are stored once (keyed by the arrays' identity).
        templates: dict[int, int] = {}
        rest, blend, span, skin_index, skin_weight = [], [], [], [], []
        vertex_total = blend_total = 0
        self._layout = []
        gaussian_base = posed_base = bone_base = 0
        for b in self.bindings:
            key = tuple(map(id, b.template_arrays))  # the bindings keep the arrays alive
            if key not in templates:
                v = len(b.vertices)
                templates[key] = vertex_total
                rest.append(np.c_[b.vertices, np.zeros(v)].astype(np.float32))
                deltas, spans = sparse_blendshapes(b.blendshapes)
                blend.append(deltas)
                spans[:, 0] += blend_total
                span.append(spans)
                k = b.skin_indices.shape[1]
                index = np.zeros((v, 4 * INFLUENCE_TEXELS), dtype=np.uint32)
                weight = np.zeros((v, 4 * INFLUENCE_TEXELS), dtype=np.float32)
                index[:, :k] = b.skin_indices
                weight[:, :k] = b.skin_weights
                skin_index.append(index)
                skin_weight.append(weight)
                vertex_total += v
                blend_total += len(deltas)
            template_base = templates[key]
            bones = int(b.skin_indices.max()) + 1 if b.skin_indices.size else 1
            self._layout.append(dict(template_base=template_base,
                                     vertex_count=len(b.vertices), gaussian_base=gaussian_base,
                                     count=len(b), posed_base=posed_base, bone_base=bone_base,
                                     bones=bones))
            gaussian_base += len(b)
            posed_base += len(b.vertices)
            bone_base += bones
        self._posed_total, self._bone_total = posed_base, bone_base
        self._upload_correctives()
        self._upload("pose_rest", np.concatenate(rest), 1, "f4")
        blend = [np.zeros((1, 4), np.float32)] if blend_total == 0 else blend
        self._upload("pose_blend", np.concatenate(blend), 1, "f4")
        self._upload("pose_blend_span", np.concatenate(span), 1, "u4")
        self._upload("pose_skin_index", np.concatenate(skin_index), INFLUENCE_TEXELS, "u4")
        self._upload("pose_skin_weight", np.concatenate(skin_weight), INFLUENCE_TEXELS, "f4")
        corners, bary, quat, scale, albedo = [], [], [], [], []
        for b in self.bindings:
            faces = np.asarray(b.faces)
            face = np.asarray(b.binding_face)
            corners.append(np.c_[faces[face], np.zeros(len(face))].astype(np.uint32))
            bary.append(np.c_[b.binding_bary, b.binding_offset].astype(np.float32))
            quat.append(np.asarray(b.local_quats, dtype=np.float32))
            scale.append(np.c_[b.local_scales, b.opacities].astype(np.float32))
            rgb = b.colors if b.colors.ndim == 2 else np.zeros((len(b), 3))
            albedo.append(np.c_[rgb, b.rest_area2[face]].astype(np.float32))
        self._upload("pose_corners", np.concatenate(corners), 1, "u4")
        self._upload("pose_bary", np.concatenate(bary), 1, "f4")
        self._upload("pose_quat", np.concatenate(quat), 1, "f4")
        self._upload("pose_scale", np.concatenate(scale), 1, "f4")
        self._upload("pose_albedo", np.concatenate(albedo), 1, "f4")
        # The renderer's Gaussians: params (3 planes) and colours, written by the shader
        # (spherical harmonics do not change with the pose: written once here).
        rows = rows_for(self.count)
        r.data_texture("params", ROW, 3 * rows)
        slots = max(self.sh_count, 1)
        colors = r.data_texture("colors", ROW * slots, rows)
        if self.sh_count:
            sh = np.zeros((rows * ROW, slots, 4), dtype=np.float32)
            sh[:self.count, :, :3] = np.concatenate([b.colors for b in self.bindings])
            colors.write(sh.tobytes(), viewport=(0, 0, ROW * slots, rows))
        r.data_texture("pose_posed", ROW, rows_for(self._posed_total))
        r.reserve("splats", self.count * 48)
        r.set_contents(0, self.sh_count, None)  # nothing to draw until the first pose
        if self.last_poses is not None:
            self.pose(self.last_poses)

    def _upload_correctives(self) -> None:
        """The avatars' correctives, padded to one width (a multiple of 4): a slot per vertex
        of each avatar that has them; the shader skips the others (width 0)."""
        with_correctives = [b for b in self.bindings if b.correctives is not None]
        width = max([b.correctives.width for b in with_correctives], default=0)
        width = -(-width // 4) * 4
        index, basis = [np.zeros((1, 4), np.uint32)], [np.zeros((1, 4), np.float32)]
        slot = feature = 0
        for b, layout in zip(self.bindings, self._layout):
            c = b.correctives
            layout.update(corr_width=0, corr_base=0, feature_base=0, features=0)
            if c is None:
                continue
            padded_index = np.zeros((len(c.index), width), np.uint32)
            padded_index[:, :c.width] = c.index
            padded_basis = np.zeros((len(c.index), width, 4), np.float32)
            padded_basis[:, :c.width, :3] = c.basis
            index.append(padded_index.reshape(-1, 4))
            basis.append(padded_basis.reshape(-1, 4))
            layout.update(corr_width=width, corr_base=slot, feature_base=feature,
                          features=c.feature_count)
            slot += len(c.index)
            feature += c.feature_count
        if with_correctives:  # the 1-item placeholders only bind something when none has
            index, basis = index[1:], basis[1:]
        self._feature_total = feature
        self._upload("pose_corr_index", np.concatenate(index), 1, "u4")
        self._upload("pose_corr_basis", np.concatenate(basis), 1, "f4")
        self._upload("pose_features", np.zeros((max(feature, 1), 4), np.float32), 1, "f4")

    def _upload(self, name: str, items: np.ndarray, parts: int, dtype: str) -> None:
        data, rows = texel_rows(items.reshape(len(items), -1), parts)
        self.renderer.data_texture(name, ROW * parts, rows, 4, dtype).write(
            data, viewport=(0, 0, ROW * parts, rows))

    def release(self) -> None:
        self.renderer.release_textures("pose_")
        for program in (getattr(self, "_vertex_program", None),
                        getattr(self, "_gaussian_program", None)):
            try:
                if program is not None:
                    program.release()
            except Exception:
                pass

    # -- per frame ------------------------------------------------------------------------
    def pose(self, poses) -> None:
        """Pose every avatar (one ``SkinPose`` each, in upload order) on the GPU."""
        poses = list(poses)
        if len(poses) != len(self.bindings):
            raise RenderError(f"{len(poses)} poses for {len(self.bindings)} avatars")
        bones = np.zeros((self._bone_total, 12), dtype=np.float32)
        features = np.zeros((max(self._feature_total, 1), 4), dtype=np.float32)
        for pose, layout in zip(poses, self._layout):
            transforms = np.asarray(pose.transforms, dtype=np.float32)
            if transforms.shape != (layout["bones"], 3, 4) and not (
                    transforms.ndim == 3 and transforms.shape[1:] == (3, 4)
                    and len(transforms) >= layout["bones"]):
                raise RenderError(f"bone transforms of shape {transforms.shape}; expected "
                                  f"({layout['bones']}, 3, 4)")
            if not np.all(np.isfinite(transforms)):
                raise RenderError("bone transforms must be finite")
            base = layout["bone_base"]
            bones[base:base + layout["bones"]] = transforms[:layout["bones"]].reshape(-1, 12)
            if layout["features"]:
                if (pose.features is None or np.shape(pose.features) != (layout["features"],)
                        or not np.all(np.isfinite(pose.features))):
                    raise RenderError(f"an avatar with correctives needs {layout['features']} "
                                      "finite pose features")
                start = layout["feature_base"]
                features[start:start + layout["features"], 0] = pose.features
        r = self.renderer
        ctx = r.ctx
        try:
            ctx.__enter__()
            self._upload("pose_bones", bones, 3, "f4")
            if self._feature_total:
                self._upload("pose_features", features, 1, "f4")
            texture = r.texture
            posed = texture("pose_posed")
            posed.bind_to_image(0, read=False, write=True)
            for unit, name in enumerate(("pose_rest", "pose_blend", "pose_skin_index",
                                         "pose_skin_weight", "pose_bones", "pose_corr_index",
                                         "pose_corr_basis", "pose_features",
                                         "pose_blend_span")):
                texture(name).use(unit)
            vp = self._vertex_program
            for pose, layout in zip(poses, self._layout):
                weights = np.asarray(pose.blendshape_weights, dtype=np.float32).reshape(-1)
                value = np.zeros(MAX_BLENDSHAPES, dtype=np.float32)
                n = min(len(weights), MAX_BLENDSHAPES)
                value[:n] = np.where(np.isfinite(weights[:n]), weights[:n], 0.0)
                set_uniforms(vp, vertex_count=layout["vertex_count"],
                              template_base=layout["template_base"],
                              bone_base=layout["bone_base"], posed_base=layout["posed_base"],
                              corr_width=layout["corr_width"], corr_base=layout["corr_base"],
                              feature_base=layout["feature_base"])
                if "blend_weight" in vp:
                    vp["blend_weight"].write(value.tobytes())
                vp.run(group_x=(layout["vertex_count"] + GROUP - 1) // GROUP)
            ctx.memory_barrier()
            gp = self._gaussian_program
            posed.use(0)
            for unit, name in enumerate(("pose_corners", "pose_bary", "pose_quat",
                                         "pose_scale", "pose_albedo"), start=1):
                texture(name).use(unit)
            texture("params").bind_to_image(0, read=False, write=True)
            texture("colors").bind_to_image(1, read=False, write=True)
            param_rows = rows_for(self.count)
            for pose, layout, binding in zip(poses, self._layout, self.bindings):
                place = (np.eye(4) if pose.world_from_avatar is None
                         else np.asarray(pose.world_from_avatar, dtype=np.float64))
                set_uniforms(gp, count=layout["count"], gaussian_base=layout["gaussian_base"],
                              posed_base=layout["posed_base"], param_rows=param_rows,
                              lambert=bool(binding.lambert),
                              light=tuple(map(float, binding.light_direction)),
                              ambient=float(binding.ambient), diffuse=float(binding.diffuse),
                              place_translation=tuple(map(float, place[:3, 3])),
                              opacity_scale=float(pose.opacity),
                              place_quat=tuple(map(float, matrix_to_quat(place[:3, :3]))))
                if "place_rotation" in gp:
                    gp["place_rotation"].write(
                        np.ascontiguousarray(place[:3, :3].T, dtype=np.float32).tobytes())
                gp.run(group_x=(layout["count"] + 127) // 128)
            ctx.memory_barrier()
        except RenderError:
            raise
        except Exception as exc:
            raise GLContextLost(f"posing avatars on the GPU failed: {exc}") from exc
        self.last_poses = poses
        r.set_contents(self.count, self.sh_count, None, reposed=True)
